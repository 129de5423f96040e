package statefulset

import (
	"maps"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	testutil.Golden(t, "default", Build(testutil.StoredKVS("demo"), ptr.To[int32](3)))
	testutil.Golden(t, "autoscaled-scheduling", Build(testutil.StoredKVS("demo", testutil.WithAutoscaling(3, 7), func(k *kvv1.KeyValueStore) {
		k.Spec.Storage.StorageClassName = ptr.To("fast")
		k.Spec.Storage.Size = ptr.To(resource.MustParse("10Gi"))
		k.Spec.NodeSelector = map[string]string{"disk": "ssd"}
		k.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "kv", Effect: corev1.TaintEffectNoSchedule}}
		k.Spec.PodLabels = map[string]string{"team": "storage", "app.kubernetes.io/name": "ignored"}
		k.Spec.PodAnnotations = map[string]string{"prometheus.io/scrape": "true"}
	}), nil))
}

// What spec.pod adds comes after what the operator sets, and required
// anti-affinity joins spec.affinity.
func TestBuildPodOverrides(t *testing.T) {
	testutil.Golden(t, "pod-overrides", Build(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.AntiAffinity = kvv1.AntiAffinityRequired
		k.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}}}},
		}}}
		k.Spec.Pod = &kvv1.PodOverrides{
			PriorityClassName:  "storage-critical",
			ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "registry"}},
			ServiceAccountName: "kvnode",
			Env:                []corev1.EnvVar{{Name: "KV_LOG_LEVEL", Value: "debug"}},
			Volumes:            []corev1.Volume{{Name: "ca-bundle", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "ca-bundle"}}}}},
			VolumeMounts:       []corev1.VolumeMount{{Name: "ca-bundle", MountPath: "/etc/ssl/extra", ReadOnly: true}},
		}
	}), ptr.To[int32](3)))
}

func TestBuildAntiAffinity(t *testing.T) {
	hostname := func(a *corev1.Affinity) (preferred, required int) {
		if a == nil || a.PodAntiAffinity == nil {
			return 0, 0
		}
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if w.PodAffinityTerm.TopologyKey == corev1.LabelHostname && w.PodAffinityTerm.LabelSelector.MatchLabels["app.kubernetes.io/instance"] == "demo" {
				preferred++
			}
		}
		for _, r := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if r.TopologyKey == corev1.LabelHostname && r.LabelSelector.MatchLabels["app.kubernetes.io/instance"] == "demo" {
				required++
			}
		}
		return preferred, required
	}
	zone := &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
		Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelTopologyZone, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}},
	}}}}
	for _, tc := range []struct {
		name                string
		mode                kvv1.AntiAffinity
		affinity            *corev1.Affinity
		preferred, required int
		userTerms           int // spec.affinity's own anti-affinity terms kept
	}{
		{"unset: preferred, as before", "", nil, 1, 0, 0},
		{"unset with spec.affinity: spec.affinity alone, as before", "", zone, 0, 0, 1},
		{"preferred", kvv1.AntiAffinityPreferred, nil, 1, 0, 0},
		{"required", kvv1.AntiAffinityRequired, nil, 0, 1, 0},
		{"required with spec.affinity: both", kvv1.AntiAffinityRequired, zone, 0, 1, 1},
		{"none", kvv1.AntiAffinityNone, nil, 0, 0, 0},
		{"none with spec.affinity", kvv1.AntiAffinityNone, zone, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kvs := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) { k.Spec.AntiAffinity, k.Spec.Affinity = tc.mode, tc.affinity.DeepCopy() })
			a := Build(kvs, ptr.To[int32](3)).Spec.Template.Spec.Affinity
			p, r := hostname(a)
			user := 0
			if a != nil && a.PodAntiAffinity != nil {
				for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
					if w.PodAffinityTerm.TopologyKey == corev1.LabelTopologyZone {
						user++
					}
				}
			}
			if p != tc.preferred || r != tc.required || user != tc.userTerms {
				t.Fatalf("preferred %d, required %d, spec.affinity's terms %d; want %d, %d, %d", p, r, user, tc.preferred, tc.required, tc.userTerms)
			}
			if tc.affinity != nil && len(tc.affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
				t.Fatal("Build changed spec.affinity")
			}
		})
	}
}

// Without spec.pod the pods run as before: the namespace's default service
// account, no priority class, no pull secrets.
func TestBuildWithoutPodOverrides(t *testing.T) {
	pod := Build(testutil.StoredKVS("demo"), ptr.To[int32](3)).Spec.Template.Spec
	if pod.ServiceAccountName != "" || pod.AutomountServiceAccountToken != nil || pod.PriorityClassName != "" || pod.ImagePullSecrets != nil {
		t.Fatalf("service account %q (automount %v), priority class %q, pull secrets %v", pod.ServiceAccountName, pod.AutomountServiceAccountToken, pod.PriorityClassName, pod.ImagePullSecrets)
	}
	if len(pod.Volumes) != 2 || len(pod.Containers[0].VolumeMounts) != 3 {
		t.Fatalf("volumes %v, mounts %v", pod.Volumes, pod.Containers[0].VolumeMounts)
	}
}

func TestBuildSecurity(t *testing.T) {
	sts := Build(testutil.StoredKVS("demo"), ptr.To[int32](3))
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	if !*pod.SecurityContext.RunAsNonRoot || !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Fatal("kvnode must run as non-root on a read-only root filesystem")
	}
	if sts.Spec.Template.Labels["app.kubernetes.io/name"] != "kvnode" {
		t.Fatal("a pod label from the spec overrode the selector")
	}
	if c.StartupProbe == nil || c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatal("probes")
	}
}

func TestBuildClientAuth(t *testing.T) {
	k := testutil.StoredKVS("demo")
	k.Status.ClientAuth = kvv1.ClientAuthMTLS
	testutil.Golden(t, "mtls", Build(k, ptr.To[int32](3)))
}

// What an unset spec.clientAuth means: mtls for a new store, and for a
// running one what its pods run, from the StatefulSet or, while it is
// being made again, from the mode recorded with the rules.
func TestClientAuthOfAStore(t *testing.T) {
	mtls := testutil.StoredKVS("demo")
	mtls.Status.ClientAuth = kvv1.ClientAuthMTLS
	runningMTLS, runningNone := Build(mtls, ptr.To[int32](3)), Build(testutil.StoredKVS("demo"), ptr.To[int32](3))
	for _, c := range []struct {
		name     string
		spec     string
		live     *appsv1.StatefulSet
		recorded string
		want     string
	}{
		{"a new store", "", nil, "", kvv1.ClientAuthMTLS},
		{"a store that runs mtls", "", runningMTLS, "", kvv1.ClientAuthMTLS},
		{"a store that runs without", "", runningNone, "", kvv1.ClientAuthNone},
		{"the StatefulSet wins over the record", "", runningNone, kvv1.ClientAuthMTLS, kvv1.ClientAuthNone},
		{"a store without, its StatefulSet being made again", "", nil, kvv1.ClientAuthNone, kvv1.ClientAuthNone},
		{"a store with, its StatefulSet being made again", "", nil, kvv1.ClientAuthMTLS, kvv1.ClientAuthMTLS},
		{"a record that means nothing", "", nil, "sometimes", kvv1.ClientAuthMTLS},
		{"spec none wins", kvv1.ClientAuthNone, runningMTLS, kvv1.ClientAuthMTLS, kvv1.ClientAuthNone},
		{"spec mtls wins", kvv1.ClientAuthMTLS, runningNone, kvv1.ClientAuthNone, kvv1.ClientAuthMTLS},
		{"spec none, new", kvv1.ClientAuthNone, nil, "", kvv1.ClientAuthNone},
	} {
		k := testutil.StoredKVS("demo")
		k.Spec.ClientAuth = c.spec
		var running *corev1.PodTemplateSpec
		if c.live != nil {
			running = &c.live.Spec.Template
		}
		if got := ClientAuth(k, running, c.recorded); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if args := runningMTLS.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--client-auth=mtls") {
		t.Errorf("mtls is not a flag: an old kvnode would ignore a variable and serve everyone (args %v)", args)
	}
}

// Peer pinning only with the operator's certificates: a user's peer
// certificate was never required to name the members.
func TestPeerDomainOnlyWithTheOperatorsCertificates(t *testing.T) {
	env := func(k *kvv1.KeyValueStore) string {
		for _, e := range Build(k, ptr.To[int32](3)).Spec.Template.Spec.Containers[0].Env {
			if e.Name == "KV_PEER_DOMAIN" {
				return e.Value
			}
		}
		return ""
	}
	if got := env(testutil.StoredKVS("demo")); got != "demo-peers.default.svc" {
		t.Errorf("issued certificates: KV_PEER_DOMAIN=%q", got)
	}
	if got := env(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) { k.Spec.TLS.SecretName = ptr.To("mine") })); got != "" {
		t.Errorf("a user's Secret: KV_PEER_DOMAIN=%q, want none", got)
	}
}

// withFrontends sets spec.frontends.rest and grpc.enabled.
func withFrontends(rest, grpc bool) testutil.Option {
	return func(k *kvv1.KeyValueStore) {
		k.Spec.Frontends = &kvv1.FrontendsSpec{REST: &kvv1.FrontendSpec{Enabled: ptr.To(rest)}, GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(grpc)}}
	}
}

// A front end that is on adds nothing to what kvnode is given (its
// default), so that a store on a kvnode from before gRPC starts as it
// did; gRPC on declares its port. REST off is a flag, which a kvnode
// that does not know it refuses; gRPC off is KV_GRPC_LISTEN set empty,
// which a kvnode without gRPC ignores.
func TestBuildFrontends(t *testing.T) {
	for _, c := range []struct {
		name     string
		opts     []testutil.Option
		restOff  bool // --rest-api=false
		grpcPort bool // the container port grpc
	}{
		{"unset", nil, false, true},
		{"both on", []testutil.Option{withFrontends(true, true)}, false, true},
		{"rest off", []testutil.Option{withFrontends(false, true)}, true, true},
		{"grpc off", []testutil.Option{withFrontends(true, false)}, false, false},
		{"grpc off, enabled of rest unset", []testutil.Option{func(k *kvv1.KeyValueStore) {
			k.Spec.Frontends = &kvv1.FrontendsSpec{GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(false)}}
		}}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := testutil.StoredKVS("demo", c.opts...)
			k.Status.ClientAuth = kvv1.ClientAuthMTLS
			ctr := Build(k, ptr.To[int32](3)).Spec.Template.Spec.Containers[0]
			if got := slices.Contains(ctr.Args, "--rest-api=false"); got != c.restOff {
				t.Errorf("--rest-api=false in args %v: %v, want %v", ctr.Args, got, c.restOff)
			}
			for _, a := range ctr.Args {
				if strings.HasPrefix(a, "--grpc-listen") || (strings.HasPrefix(a, "--rest-api") && !c.restOff) {
					t.Errorf("arg %s: an old kvnode would refuse it for a front end it need not turn off", a)
				}
			}
			if !slices.Contains(ctr.Args, "--client-auth=mtls") {
				t.Errorf("args %v lost --client-auth", ctr.Args)
			}
			i := slices.IndexFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == "grpc" })
			if (i >= 0) != c.grpcPort {
				t.Fatalf("ports %v: grpc declared %v, want %v", ctr.Ports, i >= 0, c.grpcPort)
			}
			if i >= 0 && (ctr.Ports[i].ContainerPort != 50051 || ctr.Ports[i].Protocol != corev1.ProtocolTCP) {
				t.Errorf("grpc port %+v", ctr.Ports[i])
			}
			j := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "KV_GRPC_LISTEN" })
			switch {
			case c.grpcPort && j >= 0:
				t.Errorf("gRPC on, but KV_GRPC_LISTEN=%q: kvnode's default is the declared port", ctr.Env[j].Value)
			case !c.grpcPort && (j < 0 || ctr.Env[j].Value != "" || ctr.Env[j].ValueFrom != nil):
				t.Errorf("gRPC off, but KV_GRPC_LISTEN is not set empty: %v", ctr.Env)
			}
			if len(ctr.Ports) < 2 || ctr.Ports[0].Name != "api" || ctr.Ports[1].Name != "peer" {
				t.Errorf("ports %v", ctr.Ports)
			}
		})
	}
	k := testutil.StoredKVS("demo", withFrontends(false, true))
	k.Status.ClientAuth = kvv1.ClientAuthMTLS
	testutil.Golden(t, "rest-off", Build(k, ptr.To[int32](3)))
	testutil.Golden(t, "grpc-off", Build(testutil.StoredKVS("demo", withFrontends(true, false)), ptr.To[int32](3)))
}

// spec.limits.requestsPerSecond and burst reach kvnode as KV_CLIENT_RATE
// and KV_CLIENT_BURST, only when a rate is set: the pods of a store
// without one keep their template (the golden files), so an operator
// upgrade restarts none of them for it.
func TestBuildClientRate(t *testing.T) {
	envOf := func(k *kvv1.KeyValueStore) map[string]string {
		m := map[string]string{}
		for _, e := range Build(k, ptr.To[int32](3)).Spec.Template.Spec.Containers[0].Env {
			if strings.HasPrefix(e.Name, "KV_CLIENT_") {
				m[e.Name] = e.Value
			}
		}
		return m
	}
	for _, c := range []struct {
		name        string
		rate, burst int32
		want        map[string]string
	}{
		{"unset", 0, 0, map[string]string{}},
		{"a burst without a rate means nothing", 0, 50, map[string]string{}},
		{"a rate", 100, 0, map[string]string{"KV_CLIENT_RATE": "100", "KV_CLIENT_BURST": "0"}},
		{"a rate and a burst", 100, 250, map[string]string{"KV_CLIENT_RATE": "100", "KV_CLIENT_BURST": "250"}},
	} {
		got := envOf(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) { k.Spec.Limits.RequestsPerSecond, k.Spec.Limits.Burst = c.rate, c.burst }))
		if !maps.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// spec.clients[].limits do not touch the template: they go with the
	// rules (clientaccess), which the pods re-read.
	plain := Build(testutil.StoredKVS("demo"), ptr.To[int32](3))
	withClientLimits := Build(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Clients = []kvv1.ClientSpec{{Name: "app", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](5), Burst: ptr.To[int32](10)}}}
	}), ptr.To[int32](3))
	if !equality.Semantic.DeepEqual(plain.Spec.Template, withClientLimits.Spec.Template) {
		t.Error("a client's own limits changed the pod template: they would restart the pods")
	}
}

// With the log in PostgreSQL there is no data volume to protect, and the
// PostgreSQL CA's mount is the operator's; the refusal names the
// Deployment, which is what is left as it is.
func TestRefusePostgresMounts(t *testing.T) {
	kvs := func(path string, ca bool) *kvv1.KeyValueStore {
		return testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
			k.Spec.Log = kvv1.LogSpec{Type: kvv1.LogPostgres, Postgres: &kvv1.PostgresLogSpec{Host: "pg", Database: "kv"}}
			if ca {
				k.Spec.Log.Postgres.CASecretRef = &corev1.LocalObjectReference{Name: "pg-ca"}
			}
			k.Spec.Pod = &kvv1.PodOverrides{VolumeMounts: []corev1.VolumeMount{{Name: "extra", MountPath: path}}}
		})
	}
	if why := Refuse(kvs("/var/lib/kvnode", false)); why != "" {
		t.Errorf("a mount where a Raft store keeps its data: %s", why)
	}
	if why := Refuse(kvs("/etc/kvnode/postgres-ca", false)); why != "" {
		t.Errorf("the CA's path without a CA: %s", why)
	}
	for _, p := range []string{"/etc/kvnode/postgres-ca", "/etc/kvnode/postgres-ca/x", "/etc/kvnode", "/etc/kvnode/tls"} {
		if why := Refuse(kvs(p, true)); !strings.Contains(why, "the Deployment is not updated") {
			t.Errorf("mount at %s: %q", p, why)
		}
	}
}
