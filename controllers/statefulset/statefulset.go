// Package statefulset builds the StatefulSet of kvnode pods of a
// KeyValueStore: one pod per member, each with its own volume, the TLS
// Secret mounted, probes on /livez, /readyz and a startup probe. Its pod
// template (PodTemplate) is also the Deployment's of a store whose log is
// in PostgreSQL (package deployment), so that both kinds of store take
// every pod setting of the spec in the same way.
package statefulset

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pgenv"
)

// Refuse refuses mounts over these paths; the CRD's rules on spec.pod.env
// and spec.pod.volumes refuse the names Build gives its own variables and
// volumes: keep them in step (validation_test.go checks).
const (
	dataDir   = "/var/lib/kvnode"
	tlsDir    = "/etc/kvnode/tls"
	accessDir = "/etc/kvnode/access"
	tmpDir    = "/tmp"
	uid       = 65532
	// PostgresCADir holds ca.crt of spec.log.postgres.caSecretRef.
	PostgresCADir = "/etc/kvnode/postgres-ca"
)

// The contract with kvnode for a log in PostgreSQL: the flag, and the
// variables that name the database. The credentials come from the
// Secret by reference, so the password is never in the pod template, and
// TLOG_DB_STORE names the store, so that a kvnode refuses a database whose
// log is another store's.
const (
	PostgresLogArg = pgenv.LogFlag
	EnvDBHost      = pgenv.Host
	EnvDBPort      = pgenv.Port
	EnvDBDatabase  = pgenv.Database
	EnvDBSSLMode   = pgenv.SSLMode
	EnvDBStore     = pgenv.Store
	EnvDBUsername  = pgenv.Username
	EnvDBPassword  = pgenv.Password
	EnvDBCA        = pgenv.CA
	postgresCAVol  = "postgres-ca"
	postgresCAKey  = "ca.crt"
	defaultPGPort  = 5432
	defaultSSLMode = "require"
	usernameKey    = "username"
	passwordKey    = "password"
)

// ClientAuthArg is kvnode's --client-auth=mtls in the pod template. A
// flag, not a KV_* variable: a kvnode too old to know it refuses to start
// rather than ignoring it and serving every client.
const ClientAuthArg = "--client-auth=" + kvv1.ClientAuthMTLS

// The front ends of spec.frontends, as kvnode is told to turn them off.
// kvnode serves both by default (REST on the API port, gRPC on :50051), so
// a front end that is on adds nothing to the pod's arguments or variables:
// a store whose spec.image is a kvnode from before gRPC, and that leaves
// spec.frontends alone, keeps starting with what it was given (the new
// container port is information, which such a kvnode does not look at).
// Turned off:
//   - REST is a flag, as --client-auth is: a kvnode too old to know it
//     refuses to start (the rollout stops at the first member it restarts,
//     UpgradeStopped) rather than ignore it and keep serving the routes
//     that were turned off.
//   - gRPC is a variable, KV_GRPC_LISTEN set to nothing: a kvnode too old
//     to know it has no gRPC to turn off, and starts as before, where the
//     flag --grpc-listen= would stop it for a setting it already meets.
//
// The CRD refuses both names in spec.pod.env, so that a user's value never
// contradicts the Services' ports; a flag given on the command line would
// win over the variable anyway.
const (
	RESTOffArg = "--rest-api=false"
	GRPCEnv    = "KV_GRPC_LISTEN"
)

// ClientAuth is the client authentication a store's pods are to enforce.
// spec.clientAuth decides when set. Unset, a store keeps what it runs: a
// store made before the field existed runs without it, and turning it on
// would lock out every client it has. What it runs is read from the pod
// template of its StatefulSet or Deployment (running) and, when there is
// none (deleted to be made again with other volume claims, or by a
// person), from the mode recorded with the access rules (recorded, see
// clientaccess.RulesConfigMap); with neither, the store is new, and gets
// mtls.
func ClientAuth(kvs *kvv1.KeyValueStore, running *corev1.PodTemplateSpec, recorded string) string {
	if kvs.Spec.ClientAuth != "" {
		return kvs.Spec.ClientAuth
	}
	if running == nil {
		if recorded == kvv1.ClientAuthMTLS || recorded == kvv1.ClientAuthNone {
			return recorded
		}
		return kvv1.ClientAuthMTLS
	}
	for _, c := range running.Spec.Containers {
		if slices.Contains(c.Args, ClientAuthArg) {
			return kvv1.ClientAuthMTLS
		}
	}
	return kvv1.ClientAuthNone
}

// Build returns the desired StatefulSet. replicas is the pod count the
// membership step allows; nil leaves the field to the autoscaler.
func Build(kvs *kvv1.KeyValueStore, replicas *int32) *appsv1.StatefulSet {
	size := resource.MustParse("1Gi") // the schema's default: the API server sets it on every object it stores
	if kvs.Spec.Storage.Size != nil {
		size = kvs.Spec.Storage.Size.DeepCopy()
	}
	retention := func(p kvv1.RetentionPolicyType) appsv1.PersistentVolumeClaimRetentionPolicyType {
		if p == kvv1.RetentionPolicyDelete {
			return appsv1.DeletePersistentVolumeClaimRetentionPolicyType
		}
		return appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	return &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.StatefulSetName(kvs)),
		Spec: appsv1.StatefulSetSpec{
			Replicas:            replicas,
			ServiceName:         kvv1.HeadlessServiceName(kvs),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)},
			// The operator restarts the pods on a new template itself
			// (controllers/rollout.go): the leader last, after handing
			// leadership over, and each once the cluster is healthy.
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenScaled:  retention(kvs.Spec.Storage.RetentionPolicy.WhenScaled),
				WhenDeleted: retention(kvs.Spec.Storage.RetentionPolicy.WhenDeleted),
			},
			Template: PodTemplate(kvs),
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
				ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: kvv1.SelectorLabels(kvs)},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: kvs.Spec.Storage.StorageClassName,
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
				},
			}},
		},
	}
}

// PodTemplate is the kvnode pod template of a store. With a Raft log
// (the StatefulSet's) each pod is a member: it advertises its stable DNS
// name, listens for its peers with their own certificates and keeps its
// log on the claim "data". With the log in PostgreSQL (the Deployment's)
// a pod has no identity beyond its name and nothing to keep: no peer
// port, address or certificate, no data volume, and the database's
// address and credentials instead. Everything else (client TLS and
// authentication, limits, front ends, probes, security, scheduling,
// spec.pod) is the same for both.
func PodTemplate(kvs *kvv1.KeyValueStore) corev1.PodTemplateSpec {
	raft := !kvs.PostgresLog()
	labels := kvv1.Labels(kvs)
	podLabels := map[string]string{}
	for k, v := range kvs.Spec.PodLabels {
		podLabels[k] = v
	}
	for k, v := range labels {
		podLabels[k] = v
	}
	self := fmt.Sprintf("$(KV_NODE_ID).%s.%s.svc", kvv1.HeadlessServiceName(kvs), kvs.Namespace)
	l := kvs.Spec.Limits
	env := []corev1.EnvVar{
		{Name: "KV_NODE_ID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "KV_LISTEN", Value: fmt.Sprintf(":%d", kvv1.APIPort)},
	}
	if raft {
		env = append(env,
			corev1.EnvVar{Name: "KV_API_ADVERTISE", Value: fmt.Sprintf("https://%s:%d", self, kvv1.APIPort)},
			corev1.EnvVar{Name: "KV_PEER_LISTEN", Value: fmt.Sprintf("0.0.0.0:%d", kvv1.PeerPort)},
			corev1.EnvVar{Name: "KV_PEER_ADVERTISE", Value: fmt.Sprintf("%s:%d", self, kvv1.PeerPort)},
			// The operator bootstraps pod 0 once; a pod that restarts without its
			// volume must be brought back by the leader, not found a new cluster.
			corev1.EnvVar{Name: "KV_BOOTSTRAP", Value: clusterapi.BootstrapNever},
			corev1.EnvVar{Name: "KV_DATA_DIR", Value: dataDir},
		)
	}
	env = append(env,
		corev1.EnvVar{Name: "KV_TLS_CERT", Value: tlsDir + "/tls.crt"},
		corev1.EnvVar{Name: "KV_TLS_KEY", Value: tlsDir + "/tls.key"},
		corev1.EnvVar{Name: "KV_TLS_CA", Value: tlsDir + "/ca.crt"},
	)
	if raft {
		env = append(env,
			corev1.EnvVar{Name: "KV_PEER_TLS_CERT", Value: tlsDir + "/peer.crt"},
			corev1.EnvVar{Name: "KV_PEER_TLS_KEY", Value: tlsDir + "/peer.key"},
			corev1.EnvVar{Name: "KV_PEER_TLS_CA", Value: tlsDir + "/ca.crt"},
		)
	}
	env = append(env,
		corev1.EnvVar{Name: "KV_MAX_KEY_BYTES", Value: strconv.Itoa(int(l.MaxKeyBytes))},
		corev1.EnvVar{Name: "KV_MAX_VALUE_BYTES", Value: strconv.Itoa(int(l.MaxValueBytes))},
		corev1.EnvVar{Name: "KV_MAX_IN_FLIGHT", Value: strconv.Itoa(int(l.MaxInFlight))},
		corev1.EnvVar{Name: "KV_DRAIN_DELAY", Value: "3s"},
		corev1.EnvVar{Name: "KV_SHUTDOWN_TIMEOUT", Value: "20s"},
	)
	ports := []corev1.ContainerPort{{Name: "api", ContainerPort: kvv1.APIPort, Protocol: corev1.ProtocolTCP}}
	if raft {
		ports = append(ports, corev1.ContainerPort{Name: "peer", ContainerPort: kvv1.PeerPort, Protocol: corev1.ProtocolTCP})
	}
	if kvs.GRPCEnabled() {
		// kvnode's default --grpc-listen is this port: nothing to pass.
		// The Services target it by name.
		ports = append(ports, corev1.ContainerPort{Name: "grpc", ContainerPort: kvv1.GRPCPort, Protocol: corev1.ProtocolTCP})
	} else {
		env = append(env, corev1.EnvVar{Name: GRPCEnv, Value: ""})
	}
	if l.RequestsPerSecond > 0 {
		// Only when set: the pods of a store without a rate limit keep
		// the template they had, and are not restarted for it.
		env = append(env,
			corev1.EnvVar{Name: "KV_CLIENT_RATE", Value: strconv.Itoa(int(l.RequestsPerSecond))},
			corev1.EnvVar{Name: "KV_CLIENT_BURST", Value: strconv.Itoa(int(l.Burst))},
		)
	}
	if raft && (kvs.Spec.TLS.SecretName == nil || *kvs.Spec.TLS.SecretName == "") {
		// Another store's certificate from a shared issuer is no peer. Only
		// with the operator's certificates, which are known to name the
		// members: a user's peer certificate was never required to, and
		// pinning it would cut the members off from each other.
		env = append(env, corev1.EnvVar{Name: "KV_PEER_DOMAIN", Value: kvv1.PeerDomain(kvs)})
	}
	var args []string
	if !raft {
		args = append(args, PostgresLogArg)
	}
	if !kvs.RESTEnabled() {
		args = append(args, RESTOffArg)
	}
	var mounts []corev1.VolumeMount
	if raft {
		mounts = append(mounts, corev1.VolumeMount{Name: "data", MountPath: dataDir})
	}
	mounts = append(mounts,
		corev1.VolumeMount{Name: "tls", MountPath: tlsDir, ReadOnly: true},
		corev1.VolumeMount{Name: "tmp", MountPath: tmpDir},
	)
	volumes := []corev1.Volume{
		{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: kvv1.TLSSecretName(kvs), DefaultMode: ptr.To[int32](0o440)}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if kvs.Status.ClientAuth == kvv1.ClientAuthMTLS {
		// The rules come from a ConfigMap volume, not from the pod
		// template: a change of spec.clients reaches the pods within the
		// kubelet's sync period, without restarting a member.
		args = append(args, ClientAuthArg, "--clients="+accessDir+"/"+access.RulesFile)
		mounts = append(mounts, corev1.VolumeMount{Name: "access", MountPath: accessDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "access", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: kvv1.AccessConfigMapName(kvs)}, DefaultMode: ptr.To[int32](0o444)}}})
	}
	if !raft {
		env, mounts, volumes = postgres(kvs, env, mounts, volumes)
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("api"), Scheme: corev1.URISchemeHTTPS}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
			TimeoutSeconds:   2,
		}
	}
	over := kvs.Spec.Pod
	if over == nil {
		over = &kvv1.PodOverrides{}
	}
	// The CRD refuses the names the operator sets, but an object stored
	// before a name was added to that rule keeps it (CEL ratcheting): such
	// a variable is dropped rather than let win (the last of two equal
	// names wins in the container) over what the spec says, e.g. gRPC off.
	owned := map[string]bool{GRPCEnv: true, "KV_REST_API": true, "KV_CLIENT_RATE": true, "KV_CLIENT_BURST": true, "KV_LOG": true}
	for _, e := range env {
		owned[e.Name] = true
	}
	for _, e := range over.Env {
		if !owned[e.Name] {
			env = append(env, e)
		}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: kvs.Spec.PodAnnotations},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](uid), RunAsGroup: ptr.To[int64](uid), FSGroup: ptr.To[int64](uid),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Affinity:                  affinity(kvs),
			PriorityClassName:         over.PriorityClassName,
			ImagePullSecrets:          over.ImagePullSecrets,
			ServiceAccountName:        over.ServiceAccountName,
			Tolerations:               kvs.Spec.Tolerations,
			NodeSelector:              kvs.Spec.NodeSelector,
			TopologySpreadConstraints: kvs.Spec.TopologySpreadConstraints,
			Containers: []corev1.Container{{
				Name:            "kvnode",
				Image:           kvs.Spec.Image,
				ImagePullPolicy: kvs.Spec.ImagePullPolicy,
				Args:            args,
				Env:             env,
				Ports:           ports,
				Resources:       kvs.Spec.Resources,
				StartupProbe:    probe("/livez", 1, 60),
				LivenessProbe:   probe("/livez", 10, 3),
				ReadinessProbe:  probe("/readyz", 2, 2),
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: append(mounts, over.VolumeMounts...),
			}},
			Volumes: append(volumes, over.Volumes...),
		},
	}
}

// postgres adds what a kvnode needs to reach the database of
// spec.log.postgres. The username and password are references into the
// user's Secret: the kubelet resolves them, so the operator never reads
// them and they are in no object it writes.
func postgres(kvs *kvv1.KeyValueStore, env []corev1.EnvVar, mounts []corev1.VolumeMount, volumes []corev1.Volume) ([]corev1.EnvVar, []corev1.VolumeMount, []corev1.Volume) {
	pg := kvs.Spec.Log.Postgres
	if pg == nil {
		pg = &kvv1.PostgresLogSpec{} // the CRD requires it; kvnode refuses an empty host
	}
	port := pg.Port
	if port == 0 {
		port = defaultPGPort
	}
	sslMode := pg.SSLMode
	if sslMode == "" {
		sslMode = defaultSSLMode
	}
	fromSecret := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: pg.SecretRef.Name}, Key: key}}
	}
	env = append(env,
		corev1.EnvVar{Name: EnvDBHost, Value: pg.Host},
		corev1.EnvVar{Name: EnvDBPort, Value: strconv.Itoa(int(port))},
		corev1.EnvVar{Name: EnvDBDatabase, Value: pg.Database},
		corev1.EnvVar{Name: EnvDBSSLMode, Value: sslMode},
		corev1.EnvVar{Name: EnvDBStore, Value: kvs.Namespace + "/" + kvs.Name},
		corev1.EnvVar{Name: EnvDBUsername, ValueFrom: fromSecret(usernameKey)},
		corev1.EnvVar{Name: EnvDBPassword, ValueFrom: fromSecret(passwordKey)},
	)
	if ca := pg.CASecretRef; ca != nil {
		// Only ca.crt: a Secret without it keeps the pod from starting,
		// with the kubelet's event naming the key, rather than letting
		// kvnode start without the CA it was told to verify with.
		env = append(env, corev1.EnvVar{Name: EnvDBCA, Value: PostgresCADir + "/" + postgresCAKey})
		mounts = append(mounts, corev1.VolumeMount{Name: postgresCAVol, MountPath: PostgresCADir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: postgresCAVol, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: ca.Name, DefaultMode: ptr.To[int32](0o440),
			Items: []corev1.KeyToPath{{Key: postgresCAKey, Path: postgresCAKey}},
		}}})
	}
	return env, mounts, volumes
}

// ClaimSize is the size the StatefulSet's data claim template asks for.
func ClaimSize(s *appsv1.StatefulSet) *resource.Quantity {
	for _, t := range s.Spec.VolumeClaimTemplates {
		if t.Name == "data" {
			return t.Spec.Resources.Requests.Storage()
		}
	}
	return &resource.Quantity{}
}

// Refuse says why the pod template that spec.pod asks for is not built,
// naming the field; "" when it can be. The CRD refuses the rest: a rule on
// mount paths, strings of unbounded length, exceeds its cost budget.
func Refuse(kvs *kvv1.KeyValueStore) string {
	if kvs.Spec.Pod == nil {
		return ""
	}
	type mount struct{ dir, what string }
	own := []mount{{tlsDir, "the TLS Secret"}, {accessDir, "the access rules"}, {tmpDir, "a scratch volume"}}
	workload := "StatefulSet"
	if kvs.PostgresLog() {
		workload = "Deployment"
		if pg := kvs.Spec.Log.Postgres; pg != nil && pg.CASecretRef != nil {
			own = append(own, mount{PostgresCADir, "the PostgreSQL CA"})
		}
	} else {
		own = append([]mount{{dataDir, "the data volume"}}, own...)
	}
	for i, m := range kvs.Spec.Pod.VolumeMounts {
		// As the container runtime resolves it: relative to the root.
		p := path.Clean("/" + m.MountPath)
		for _, o := range own {
			if p == o.dir || strings.HasPrefix(p, o.dir+"/") || strings.HasPrefix(o.dir, strings.TrimSuffix(p, "/")+"/") {
				return fmt.Sprintf("spec.pod.volumeMounts[%d].mountPath %q is at, inside or above %s, where the operator mounts %s: the %s is not updated until it is changed", i, m.MountPath, o.dir, o.what, workload)
			}
		}
	}
	return ""
}

// affinity is spec.affinity with the pod anti-affinity spec.antiAffinity
// asks for. Unset, it is what it was before the field existed: preferred
// when spec.affinity is unset, and spec.affinity alone when it is set.
func affinity(kvs *kvv1.KeyValueStore) *corev1.Affinity {
	mode := kvs.Spec.AntiAffinity
	if mode == "" {
		if kvs.Spec.Affinity != nil {
			return kvs.Spec.Affinity
		}
		mode = kvv1.AntiAffinityPreferred
	}
	a := kvs.Spec.Affinity.DeepCopy()
	if mode == kvv1.AntiAffinityNone {
		return a
	}
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.PodAntiAffinity == nil {
		a.PodAntiAffinity = &corev1.PodAntiAffinity{}
	}
	// One member per node: a node lost takes one vote with it, not a quorum.
	term := corev1.PodAffinityTerm{
		LabelSelector: &metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)},
		TopologyKey:   corev1.LabelHostname,
	}
	if mode == kvv1.AntiAffinityRequired {
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, term)
	} else {
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: 100, PodAffinityTerm: term})
	}
	return a
}

// KeepClaimTemplates carries live's volume claim templates over into
// desired, because a StatefulSet's claim templates cannot change after
// creation: applying others would fail every reconcile. A larger size is
// not applied here: the volumes step grows the claims and re-creates the
// StatefulSet (ClaimSize tells it when).
func KeepClaimTemplates(desired, live *appsv1.StatefulSet) {
	if live == nil {
		return
	}
	desired.Spec.VolumeClaimTemplates = nil
	for _, t := range live.Spec.VolumeClaimTemplates {
		t := *t.DeepCopy()
		// As a builder makes it: the live objects carry no kind but a status.
		t.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"}
		t.Status = corev1.PersistentVolumeClaimStatus{}
		desired.Spec.VolumeClaimTemplates = append(desired.Spec.VolumeClaimTemplates, t)
	}
}
