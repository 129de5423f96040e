package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KeyValueStoreSpec is the cluster a user asks for.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !self.autoscaling.enabled || !has(self.autoscaling.minReplicas) || self.autoscaling.minReplicas >= self.replicas",message="autoscaling.minReplicas may not be below replicas: the voters are always there"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !self.autoscaling.enabled || self.autoscaling.maxReplicas >= self.replicas",message="autoscaling.maxReplicas may not be below replicas"
// +kubebuilder:validation:XValidation:rule="has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)",message="restore can be set only when the store is created, and not changed"
// +kubebuilder:validation:XValidation:rule="!has(self.backup) || !has(self.log) || !has(self.log.type) || self.log.type != 'postgres'",message="backup is for stores with log.type raft: a store whose log is in PostgreSQL is backed up with PostgreSQL's own backups",fieldPath=".backup"
// +kubebuilder:validation:XValidation:rule="!has(self.restore) || !has(self.log) || !has(self.log.type) || self.log.type != 'postgres'",message="restore is for stores with log.type raft: a store whose log is in PostgreSQL is restored with PostgreSQL's own backups",fieldPath=".restore"
type KeyValueStoreSpec struct {
	// Replicas is the number of voting members, 1 to 9. A cluster of 2n+1
	// voters survives the loss of n; odd numbers are recommended, 1 is for
	// development. Every write waits for a majority of the voters, so more
	// voters make writes slower; autoscaling adds read capacity with
	// non-voters instead. With log.type postgres it is the number of
	// kvnode pods, none of which votes: PostgreSQL orders the writes.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image is the kvnode container image.
	// +kubebuilder:default="kvstore.dev/kvnode:dev"
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the kvnode container.
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Log chooses where the store's transaction log lives: replicated by
	// the kvnodes with Raft (raft, the default) or in PostgreSQL
	// (postgres). Immutable once set.
	// +kubebuilder:default={}
	// +optional
	Log LogSpec `json:"log,omitempty"`

	// Storage is the volume each member keeps its transaction log on.
	// With log.type postgres there is none, and it is ignored.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Resources of the kvnode container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// TLS configures the certificates of the client API and of the peers.
	// +kubebuilder:default={}
	// +optional
	TLS TLSSpec `json:"tls,omitempty"`

	// Autoscaling adds non-voting read replicas beyond Replicas under load
	// (with log.type postgres, kvnode pods: none of them votes).
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Limits bound what clients may store and send.
	// +kubebuilder:default={}
	// +optional
	Limits LimitsSpec `json:"limits,omitempty"`

	// Affinity of the kvnode pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// Tolerations of the kvnode pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// NodeSelector of the kvnode pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// TopologySpreadConstraints of the kvnode pods.
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// PodAnnotations are added to the kvnode pods.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
	// PodLabels are added to the kvnode pods (the operator's own labels win).
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`
	// AntiAffinity keeps the kvnode pods of the store on different nodes
	// (kubernetes.io/hostname): Preferred (the scheduler tries), Required
	// (a pod stays Pending rather than share a node: the store needs as
	// many schedulable nodes as pods, autoscaled read replicas included)
	// or None. Set, it is added to spec.affinity. Unset: Preferred when
	// spec.affinity is unset, and spec.affinity alone when it is set, as
	// before this field existed.
	// +kubebuilder:validation:Enum=Preferred;Required;None
	// +optional
	AntiAffinity AntiAffinity `json:"antiAffinity,omitempty"`
	// Pod adds to the kvnode pods what a cluster may require of every pod:
	// a priority class, image pull secrets, a service account, environment
	// variables and volumes.
	// +optional
	Pod *PodOverrides `json:"pod,omitempty"`

	// Paused stops every change to the cluster; status stays fresh.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// Backup takes backups on a schedule (KeyValueStoreBackup objects
	// named <store>-<UTC time>) and keeps the last spec.backup.keep.
	// Only with log.type raft: PostgreSQL backs up a postgres store's log.
	// +optional
	Backup *BackupSchedule `json:"backup,omitempty"`

	// Restore starts a new store from a backup: pod 0 is restored before
	// it first starts, with a new cluster ID, and the other members join
	// it. It can be set only when the store is created, and a restore into
	// volumes that already hold data is refused. Only with log.type raft.
	// +optional
	Restore *RestoreSource `json:"restore,omitempty"`

	// ReplaceAfter replaces a member whose pod could not be scheduled for
	// this long (its node gone, with the node's local volume): the
	// operator deletes its volume claim and pod, and the member comes back
	// on a new volume, to be removed and re-added by the lost-volume
	// steps. Only one member at a time, and only while the other voters
	// hold a healthy quorum. Unset: never. Ignored with log.type postgres,
	// whose pods have no volume to replace.
	// +optional
	ReplaceAfter *metav1.Duration `json:"replaceAfter,omitempty"`

	// Monitoring configures the PodMonitor the operator creates for the
	// kvnode metrics when the Prometheus Operator's CRDs are installed.
	// +optional
	Monitoring *MonitoringSpec `json:"monitoring,omitempty"`

	// ClientAuth is mtls or none. With mtls every request to the client
	// API needs the certificate of a client in Clients (401 without one,
	// 403 outside the client's rights); probes and metrics stay open.
	// Unset: mtls for a new store; a store created before this field
	// existed keeps what it runs (none) until it is set.
	// +kubebuilder:validation:Enum=mtls;none
	// +optional
	ClientAuth string `json:"clientAuth,omitempty"`

	// Clients are the store's named clients, each with a certificate
	// Secret <store>-client-<name> and its rights. A client removed from
	// the list is refused within a minute or two (the kubelet's update
	// of the pods' rules file), and its Secret is deleted.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Clients []ClientSpec `json:"clients,omitempty"`

	// NetworkPolicy restricts who reaches the pods at all.
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Frontends turns the client front ends on and off: rest (HTTP on
	// port 8080) and grpc (port 50051). Both are on unless set to false,
	// and they may not both be off. spec.pod.env may not set
	// KV_GRPC_LISTEN or KV_REST_API: this field does.
	// +optional
	Frontends *FrontendsSpec `json:"frontends,omitempty"`
}

// AntiAffinity says how strictly the kvnode pods of a store keep to
// different nodes.
type AntiAffinity string

const (
	// AntiAffinityPreferred asks the scheduler to put the pods on
	// different nodes when it can.
	AntiAffinityPreferred AntiAffinity = "Preferred"
	// AntiAffinityRequired never puts two pods of the store on one node.
	AntiAffinityRequired AntiAffinity = "Required"
	// AntiAffinityNone leaves placement to spec.affinity and the scheduler.
	AntiAffinityNone AntiAffinity = "None"
)

// PodOverrides are additions to the kvnode pods' template. What the
// operator sets itself is refused rather than overridden, so that a
// manifest never holds a value that has no effect: the environment
// variables it sets and its volumes' names at apply time, mounts over its
// mount paths when the store is reconciled (a CEL rule on paths of
// unbounded length exceeds the API server's cost budget).
//
// +kubebuilder:validation:XValidation:rule="!has(self.env) || self.env.all(e, !(e.name in ['KV_GRPC_LISTEN', 'KV_REST_API']))",message="may not set KV_GRPC_LISTEN or KV_REST_API: spec.frontends turns the front ends on and off",fieldPath=".env"
type PodOverrides struct {
	// PriorityClassName of the kvnode pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// ImagePullSecrets to pull spec.image with.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// ServiceAccountName the kvnode pods run as. Unset: the namespace's
	// default service account, as before this field existed.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// Env adds environment variables to the kvnode container, such as
	// KV_LOG_LEVEL or the KV_SNAPSHOT_ settings. The variables the operator
	// sets (the node's identity, addresses, data and TLS paths, bootstrap
	// mode, spec.limits, drain and shutdown times, spec.log.postgres) are
	// refused.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(e, !(e.name in ['KV_NODE_ID', 'KV_LISTEN', 'KV_API_ADVERTISE', 'KV_PEER_LISTEN', 'KV_PEER_ADVERTISE', 'KV_BOOTSTRAP', 'KV_DATA_DIR', 'KV_TLS_CERT', 'KV_TLS_KEY', 'KV_TLS_CA', 'KV_PEER_TLS_CERT', 'KV_PEER_TLS_KEY', 'KV_PEER_TLS_CA', 'KV_MAX_KEY_BYTES', 'KV_MAX_VALUE_BYTES', 'KV_MAX_IN_FLIGHT', 'KV_CLIENT_RATE', 'KV_CLIENT_BURST', 'KV_DRAIN_DELAY', 'KV_SHUTDOWN_TIMEOUT', 'KV_PEER_DOMAIN', 'TLOG_DB_HOST', 'TLOG_DB_PORT', 'TLOG_DB_DATABASE', 'TLOG_DB_SSLMODE', 'TLOG_DB_STORE', 'TLOG_DB_USERNAME', 'TLOG_DB_PASSWORD', 'TLOG_DB_CA', 'KV_LOG']))",message="may not set a variable the operator sets: KV_NODE_ID, KV_LISTEN, KV_API_ADVERTISE, KV_PEER_LISTEN, KV_PEER_ADVERTISE, KV_BOOTSTRAP, KV_DATA_DIR, KV_TLS_CERT, KV_TLS_KEY, KV_TLS_CA, KV_PEER_TLS_CERT, KV_PEER_TLS_KEY, KV_PEER_TLS_CA, KV_MAX_KEY_BYTES, KV_MAX_VALUE_BYTES, KV_MAX_IN_FLIGHT, KV_CLIENT_RATE, KV_CLIENT_BURST, KV_DRAIN_DELAY, KV_SHUTDOWN_TIMEOUT, KV_PEER_DOMAIN, TLOG_DB_*, KV_LOG (spec.limits sets the limits, spec.log the log)"
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
	// Volumes adds volumes to the kvnode pods, to mount with VolumeMounts.
	// The names data, tls, tmp, access and postgres-ca are the operator's.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(v, !(v.name in ['data', 'tls', 'tmp', 'access', 'postgres-ca']))",message="may not be named data, tls, tmp, access or postgres-ca: the operator's volumes have these names"
	// +optional
	Volumes []corev1.Volume `json:"volumes,omitempty"`
	// VolumeMounts adds mounts to the kvnode container, of Volumes (or of
	// the operator's volumes elsewhere). A mount at, inside or above the
	// operator's own (/var/lib/kvnode for the data, /etc/kvnode/tls,
	// /etc/kvnode/access, /etc/kvnode/postgres-ca, /tmp) is refused: the
	// store is Degraded, reason InvalidSpec, and the StatefulSet (or
	// Deployment) is left as it is until the mount is changed.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`
}

// MonitoringSpec configures how Prometheus scrapes the store.
type MonitoringSpec struct {
	// Enabled creates a PodMonitor (monitoring.coreos.com/v1) for the
	// store's pods when that API is installed; false deletes it.
	// Default true.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// StorageSpec is the persistent volume of each member.
//
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable"
type StorageSpec struct {
	// The rules on Size see the value as it was sent, an integer or a
	// string, hence string(self) before quantity(). isQuantity says in
	// words what the schema's pattern checks; the other rules pass what it
	// rejects, so that a malformed size gets that message rather than an
	// evaluation error. A size of zero or below is rejected at apply time
	// because no volume can be provisioned for it: the store would stay
	// Creating with nothing saying why. Size is a pointer because a zero
	// Quantity marshals as "0": a Go client that leaves it unset must send
	// nothing, and get the default, rather than a size that is rejected.

	// Size of each member's volume, a positive quantity such as 1Gi or
	// 500Mi (a plain integer counts bytes). It may grow (if the storage
	// class allows expansion) but never shrink.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self))",message="storage.size must be a quantity such as 1Gi"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",message="storage.size must be greater than zero"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !isQuantity(string(oldSelf)) || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0",message="storage.size may not decrease"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the volumes; empty means the cluster default.
	// Immutable.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// RetentionPolicy says what happens to the volumes of members that go
	// away.
	// +kubebuilder:default={}
	// +optional
	RetentionPolicy RetentionPolicy `json:"retentionPolicy,omitempty"`

	// AutoExpand grows the volumes by itself when a member runs low on
	// space, step by step up to maxSize (the storage class must allow
	// volume expansion).
	// +optional
	AutoExpand *AutoExpandSpec `json:"autoExpand,omitempty"`
}

// AutoExpandSpec grows the volumes when a member reports that it is
// running out of space: its free space, beyond what it keeps in reserve,
// is under a tenth of its volume, or it refuses writes (507). Every
// volume grows by Step, never beyond MaxSize, and not again until the
// last growth reached the file systems.
//
// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self.step)) || !isQuantity(string(self.maxSize)) || quantity(string(self.step)).isGreaterThan(quantity('0'))",message="storage.autoExpand.step must be greater than zero"
type AutoExpandSpec struct {
	// Step added to every volume at each expansion, e.g. 1Gi.
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self))",message="storage.autoExpand.step must be a quantity such as 1Gi"
	Step resource.Quantity `json:"step"`
	// MaxSize is the largest a volume grows to by itself, e.g. 20Gi.
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self))",message="storage.autoExpand.maxSize must be a quantity such as 20Gi"
	MaxSize resource.Quantity `json:"maxSize"`
}

// UpgradeStatus is a rollout of a new pod template (a new image, or any
// other change to the pods) that the operator drives one member at a time.
type UpgradeStatus struct {
	// Updated is "x/y": pods on the new template of all pods.
	Updated string `json:"updated"`
	// CurrentImage is the image the pods not yet updated run.
	// +optional
	CurrentImage string `json:"currentImage,omitempty"`
	// TargetImage is spec.image.
	TargetImage string `json:"targetImage"`
	// Restarting is the pod the operator restarted last, until its member
	// is healthy again.
	// +optional
	Restarting string `json:"restarting,omitempty"`
	// RestartedAt is when it was restarted.
	// +optional
	RestartedAt *metav1.Time `json:"restartedAt,omitempty"`
}

// VolumesStatus is the members' volumes as the operator last saw them.
type VolumesStatus struct {
	// Requested is the size every volume is asked to have: spec.storage.size,
	// or more where autoExpand or an earlier spec grew them.
	// +optional
	Requested *resource.Quantity `json:"requested,omitempty"`
	// Capacity of the smallest volume.
	// +optional
	Capacity *resource.Quantity `json:"capacity,omitempty"`
	// Resizing are the claims not yet at the requested size.
	// +optional
	Resizing []string `json:"resizing,omitempty"`
}

// RetentionPolicyType says whether a member's volume outlives it; the
// values are those of the StatefulSet's PVC retention policy, which the
// operator passes them to.
//
// +kubebuilder:validation:Enum=Retain;Delete
type RetentionPolicyType string

const (
	// RetentionPolicyRetain keeps the volume, and its data, after the
	// member is gone.
	RetentionPolicyRetain RetentionPolicyType = "Retain"
	// RetentionPolicyDelete deletes the volume with the member.
	RetentionPolicyDelete RetentionPolicyType = "Delete"
)

// RetentionPolicy maps to the StatefulSet's PVC retention policy.
type RetentionPolicy struct {
	// WhenScaled: Retain or Delete the volume of a member removed by a
	// scale-down.
	// +kubebuilder:default=Delete
	// +optional
	WhenScaled RetentionPolicyType `json:"whenScaled,omitempty"`
	// WhenDeleted: Retain or Delete the volumes when the KeyValueStore is
	// deleted.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted RetentionPolicyType `json:"whenDeleted,omitempty"`
}

// TLSSpec configures certificates. By default the operator issues a CA and
// the certificates into a Secret and renews them; SecretName names an
// existing Secret instead (e.g. from cert-manager).
//
// +kubebuilder:validation:XValidation:rule="has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)",message="tls.secretName is immutable"
type TLSSpec struct {
	// SecretName of an existing Secret with ca.crt, tls.crt, tls.key,
	// peer.crt and peer.key. Empty: the operator issues them. Immutable.
	// +optional
	SecretName *string `json:"secretName,omitempty"`

	// CertificateLifetime of the certificates the operator issues.
	// +kubebuilder:default="2160h"
	// +optional
	CertificateLifetime *metav1.Duration `json:"certificateLifetime,omitempty"`

	// RenewAtPercent of a certificate's lifetime at which the operator
	// renews it.
	// +kubebuilder:default=67
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=95
	// +optional
	RenewAtPercent int32 `json:"renewAtPercent,omitempty"`
}

// AutoscalingSpec adds non-voting read replicas: the HorizontalPodAutoscaler
// scales the StatefulSet between max(minReplicas, replicas) and
// maxReplicas; the members beyond spec.replicas never vote, so quorum does
// not change.
//
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",message="autoscaling.maxReplicas may not be below autoscaling.minReplicas"
type AutoscalingSpec struct {
	// Enabled turns autoscaling on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// MinReplicas, voters included; at least spec.replicas.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// MaxReplicas, voters included.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetCPUUtilizationPercentage the autoscaler aims at.
	// +kubebuilder:default=70
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// LimitsSpec bounds what clients may do.
type LimitsSpec struct {
	// MaxKeyBytes is the largest key accepted (414 above).
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +optional
	MaxKeyBytes int32 `json:"maxKeyBytes,omitempty"`
	// MaxValueBytes is the largest value accepted (413 above).
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16777216
	// +optional
	MaxValueBytes int32 `json:"maxValueBytes,omitempty"`
	// MaxInFlight is the number of requests a member serves at once;
	// more are shed with 503.
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxInFlight int32 `json:"maxInFlight,omitempty"`
	// RequestsPerSecond is how many requests of the key API each client
	// may make of each member per second, sustained; more are answered
	// 429 Too Many Requests with Retry-After. A client is a name of
	// spec.clients (with clientAuth mtls), or else an IP address. A
	// client of spec.clients may have its own (spec.clients[].limits).
	// 0 or unset: no limit. Probes, the operator and the members' calls
	// to each other are never throttled. A change restarts the pods, one
	// at a time.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	RequestsPerSecond int32 `json:"requestsPerSecond,omitempty"`
	// Burst is how many requests a client that was idle may make of a
	// member at once under RequestsPerSecond (its token bucket's size).
	// 0 or unset: one second's worth of RequestsPerSecond.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Burst int32 `json:"burst,omitempty"`
}

// MemberStatus is one member as the operator last saw it.
type MemberStatus struct {
	// Name of the pod.
	Name string `json:"name"`
	// Role: voter or non-voter.
	Role string `json:"role"`
	// Healthy: the member answered and is ready.
	Healthy bool `json:"healthy"`
	// Joining: the member was added, or its role changed, and it has not
	// been healthy in that role since: on its way in, not down. Status
	// counts it as a planned change (Progressing), not a fault (Degraded).
	// +optional
	Joining bool `json:"joining,omitempty"`
}

// MembershipStep is the membership change in progress. It is written to
// status before the change is made, so an operator that restarts mid-step
// finishes it (every step is idempotent on the kvnodes).
type MembershipStep struct {
	// Action: Bootstrap, AddNonVoter, Promote, Demote, Remove, TransferLeadership, UpdateAddress, Admit or Recover.
	Action string `json:"action"`
	// Member is the pod the step is about.
	Member string `json:"member"`
	// Started is when the step was first attempted.
	Started metav1.Time `json:"started"`
}

// KeyValueStoreStatus is what the operator observed.
type KeyValueStoreStatus struct {
	// ObservedGeneration is the generation the status describes; it is
	// set only after a reconcile succeeded.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase: Creating, Running, Scaling, Degraded or Paused.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Replicas is the number of kvnode pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of ready kvnode pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Ready is "ready/replicas" for kubectl get.
	// +optional
	Ready string `json:"ready,omitempty"`
	// Voters is the number of voting members (none with log.type postgres).
	// +optional
	Voters int32 `json:"voters,omitempty"`
	// Leader is the pod that leads (none with log.type postgres).
	// +optional
	Leader string `json:"leader,omitempty"`
	// Members of the Raft configuration.
	// +optional
	Members []MemberStatus `json:"members,omitempty"`
	// Endpoint is the URL in-cluster clients use.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// ClusterID is the identity of the Raft cluster, set once at bootstrap.
	// +optional
	ClusterID string `json:"clusterID,omitempty"`
	// Bootstrapped records that the cluster was bootstrapped, so that it
	// never is again.
	// +optional
	Bootstrapped bool `json:"bootstrapped,omitempty"`
	// Membership is the change in progress, if any.
	// +optional
	Membership *MembershipStep `json:"membership,omitempty"`
	// RecoveredFrom is the value of the kv.kvstore.dev/recover-from
	// annotation the operator last recovered a lost quorum from; the same
	// value is not acted on twice. Cleared when the annotation is removed.
	// +optional
	RecoveredFrom string `json:"recoveredFrom,omitempty"`
	// RestoredFrom says which backup the store was restored from (the
	// backup's cluster ID and Raft index), once pod 0 holds it.
	// +optional
	RestoredFrom string `json:"restoredFrom,omitempty"`
	// LastScheduledBackup is when spec.backup.schedule last created a
	// KeyValueStoreBackup.
	// +optional
	LastScheduledBackup *metav1.Time `json:"lastScheduledBackup,omitempty"`
	// Replacing is the pod whose volume claim the operator deleted after
	// it could not be scheduled for spec.replaceAfter, until it runs again.
	// +optional
	Replacing string `json:"replacing,omitempty"`
	// CertificateNotAfter is when the current server certificate expires.
	// +optional
	CertificateNotAfter *metav1.Time `json:"certificateNotAfter,omitempty"`
	// Upgrade is the rollout in progress, if any.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// Volumes is the members' volumes: their size and any resize in progress.
	// +optional
	Volumes *VolumesStatus `json:"volumes,omitempty"`
	// ClientAuth is the client authentication the pods enforce (mtls or
	// none): spec.clientAuth, or what an unset field means for this store.
	// +optional
	ClientAuth string `json:"clientAuth,omitempty"`
	// CertificatesRenewedFor is the last value of the
	// kv.kvstore.dev/renew-certificates annotation the operator acted on.
	// +optional
	CertificatesRenewedFor string `json:"certificatesRenewedFor,omitempty"`
	// Selector of the pods, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// Conditions: Ready, Progressing, Degraded, StorageFull.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// KeyValueStore is a replicated key-value cluster of kvnode pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName={kvs,kvstores},categories=all
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Log",type=string,JSONPath=`.spec.log.type`
// +kubebuilder:printcolumn:name="Leader",type=string,JSONPath=`.status.leader`
// +kubebuilder:printcolumn:name="Updated",type=string,JSONPath=`.status.upgrade.updated`,priority=1
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`,priority=0
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec.backup) || self.metadata.name.size() <= 41",message="a store with spec.backup may have a name of at most 41 characters: its scheduled backups are named <name>-<14 digits>, and their Jobs <that>-backup"
type KeyValueStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KeyValueStoreSpec   `json:"spec,omitempty"`
	Status KeyValueStoreStatus `json:"status,omitempty"`
}

// KeyValueStoreList is a list of KeyValueStores.
//
// +kubebuilder:object:root=true
type KeyValueStoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KeyValueStore `json:"items"`
}
