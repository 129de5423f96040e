package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
)

// Condition types.
const (
	// ConditionReady: every voter is ready and the cluster has a leader
	// (with the log in PostgreSQL: spec.replicas pods are ready).
	ConditionReady = "Ready"
	// ConditionProgressing: the operator is changing the cluster.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: the cluster serves, but not as asked (a member is
	// down, a field cannot be applied).
	ConditionDegraded = "Degraded"
	// ConditionStorageFull: a member refuses writes (507) because its
	// volume is full; reads and deletes still work. Grow the volumes.
	ConditionStorageFull = "StorageFull"
)

// Condition reasons.
const (
	ReasonAvailable          = "Available"
	ReasonCreating           = "Creating"
	ReasonWaitingForPods     = "WaitingForPods"
	ReasonBootstrapping      = "Bootstrapping"
	ReasonScaling            = "Scaling"
	ReasonMembershipChange   = "MembershipChange"
	ReasonNoLeader           = "NoLeader"
	ReasonMembersUnhealthy   = "MembersUnhealthy"
	ReasonClusterUnreachable = "ClusterUnreachable"
	ReasonPaused             = "Paused"
	ReasonReconcileFailed    = "ReconcileFailed"
	ReasonImmutableField     = "ImmutableField"
	ReasonStable             = "Stable"
	ReasonHealthy            = "Healthy"
	// ReasonUnsafeMembershipChange: a membership change or a shrink of the
	// StatefulSet the spec asks for waits, because it would be made on a
	// view that is not the leader's or would leave fewer healthy voters
	// than a majority; the message says which.
	ReasonUnsafeMembershipChange = "UnsafeMembershipChange"
	// ReasonClusterIDMismatch: a pod reports another cluster ID than the
	// one recorded for the store (or than the other pods); no membership
	// change is made until a person finds out which cluster is the store's.
	ReasonClusterIDMismatch = "ClusterIDMismatch"
	// ReasonQuorumLost: a majority of the voters lost their volumes; the
	// message names the survivor to recover from (docs/quorum-loss.md).
	ReasonQuorumLost = "QuorumLost"
	// ReasonClusterAdopted: the store had no record of a cluster, and its
	// pods' volumes held one, which it took as its own instead of
	// bootstrapping a new one.
	ReasonClusterAdopted = "ClusterAdopted"
	// ReasonRestoring: pod 0's volume is being restored from spec.restore;
	// no pod runs until it is.
	ReasonRestoring = "Restoring"
	// ReasonRestoreFailed: the restore Job failed (a damaged backup, a
	// volume that already holds data); the message says why.
	ReasonRestoreFailed = "RestoreFailed"
	// ReasonVolumesFull / ReasonVolumesOK: the StorageFull condition.
	ReasonVolumesFull = "VolumesFull"
	ReasonVolumesOK   = "VolumesOK"
	// ReasonReplacingMember: a pod unschedulable for spec.replaceAfter
	// lost its claim and comes back on a new volume.
	ReasonReplacingMember = "ReplacingMember"
	// ReasonVolumeExpansionRefused: the volumes cannot grow to the size
	// asked (the storage class does not allow expansion); the message
	// says which claim and why.
	ReasonVolumeExpansionRefused = "VolumeExpansionRefused"
	// ReasonUpgrading: members are restarted on a new pod template, one at
	// a time (Progressing).
	ReasonUpgrading = "Upgrading"
	// ReasonUpgradeStopped: a member restarted on the new template did
	// not come back healthy in time; no other member is restarted until it
	// does (Degraded).
	ReasonUpgradeStopped = "UpgradeStopped"
	// ReasonResizingVolumes: volume claims are growing (Progressing).
	ReasonResizingVolumes = "ResizingVolumes"
	// ReasonMembershipStepFailed: the kvnodes refused or did not answer the
	// membership step the operator made; it is tried again, and the message
	// gives the step and the error (Progressing, Degraded, a Warning event).
	ReasonMembershipStepFailed = "MembershipStepFailed"
	// ReasonInvalidSpec: the spec asks for something the operator refuses
	// that the CRD's rules cannot check; the message names the field. The
	// children are left as they are until the spec is changed.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonPodsNotReady: with the log in PostgreSQL, fewer pods are
	// ready than spec.replicas; the message names the pods that are down
	// (restarted, or not ready for minutes) and why.
	ReasonPodsNotReady = "PodsNotReady"
	// ReasonRolloutStopped: with the log in PostgreSQL, the Deployment
	// reports that its rollout or its pods cannot go on (its own
	// ProgressDeadlineExceeded or ReplicaFailure); the message is its.
	ReasonRolloutStopped = "RolloutStopped"
)

// Phases of a KeyValueStoreBackup.
const (
	BackupPending   = "Pending"
	BackupRunning   = "Running"
	BackupSucceeded = "Succeeded"
	BackupFailed    = "Failed"
)

// Condition types of a KeyValueStoreBackup.
const (
	BackupConditionComplete = "Complete"
	BackupConditionFailed   = "Failed"
)

// BackupReasonPostgresLog: the backup is of a store whose log is in
// PostgreSQL, which a KeyValueStoreBackup cannot copy: PostgreSQL's own
// backups hold that store's data.
const BackupReasonPostgresLog = "PostgresLog"

// Labels on the KeyValueStoreBackups of a store: which store, and whether
// spec.backup.schedule made it (only those are pruned).
const (
	LabelBackupStore     = "kv.kvstore.dev/store"
	LabelBackupScheduled = "kv.kvstore.dev/scheduled"
	// LabelBackupStoreUID: the UID of the store a scheduled backup is of;
	// a store re-created under the same name prunes only its own.
	LabelBackupStoreUID = "kv.kvstore.dev/store-uid"
)

// LabelClient marks a client's certificate Secret with the client's
// name; on a pod, it is what spec.networkPolicy admits as that client
// when the client names no selectors.
const LabelClient = "kv.kvstore.dev/client"

// AnnotationClientIssuedAfter on a client's Secret is when its first
// certificate was issued (RFC 3339). The pods refuse certificates of that
// client issued before: those of an earlier client of the same name.
const AnnotationClientIssuedAfter = "kv.kvstore.dev/client-issued-after"

// Phases shown by kubectl get.
const (
	PhaseCreating = "Creating"
	PhaseRunning  = "Running"
	PhaseScaling  = "Scaling"
	PhaseDegraded = "Degraded"
	PhasePaused   = "Paused"
	// PhaseUpgrading: the operator restarts the members on a new pod
	// template, one at a time (status.upgrade).
	PhaseUpgrading = "Upgrading"
)

// Membership actions.
const (
	ActionBootstrap   = "Bootstrap"
	ActionAddNonVoter = "AddNonVoter"
	ActionPromote     = "Promote"
	ActionDemote      = "Demote"
	ActionRemove      = "Remove"
	ActionTransfer    = "TransferLeadership"
	// ActionUpdateAddress records a member's peer address as its pod's
	// stable DNS name.
	ActionUpdateAddress = "UpdateAddress"
	// ActionRecover makes a survivor of a lost quorum the whole cluster
	// (AnnotationRecoverFrom).
	ActionRecover = "Recover"
	// ActionAdmit lets a voter that lost its volume vote again once it
	// has caught up, when removing it is not safe.
	ActionAdmit = "Admit"
)

// AnnotationRecoverFrom on a KeyValueStore names the pod (e.g. demo-0)
// to rebuild the store from after it lost its quorum for good (status
// reason QuorumLost names the most up-to-date survivor). The operator acts
// on it only while the quorum is lost: it makes that member the whole
// cluster, giving up writes only the lost members held, and the others
// join it again. Remove it once the store is healthy; to recover again
// later, set it anew (a new value, or remove and re-add it).
const AnnotationRecoverFrom = "kv.kvstore.dev/recover-from"

// AnnotationRenewCertificates on a KeyValueStore asks for new certificates
// now: set it to any new value (a timestamp) and the operator reissues the
// server, peer and admin certificates once, recording the value in
// status.certificatesRenewedFor.
const AnnotationRenewCertificates = "kv.kvstore.dev/renew-certificates"

// AnnotationClusterID on the StatefulSet records the ID of the store's
// Raft cluster, once the operator has seen it. It outlives the store's
// status (a store re-applied from a manifest has none), and the operator
// never bootstraps a store whose StatefulSet carries it; a pod that
// reports another ID makes the store Degraded (ReasonClusterIDMismatch).
const AnnotationClusterID = "kv.kvstore.dev/cluster-id"

// Ports of a kvnode pod. GRPCPort is kvnode's default --grpc-listen
// (:50051), served when spec.frontends.grpc is on.
const (
	APIPort  = 8080
	PeerPort = 8081
	GRPCPort = 50051
)

// Names of the objects of a KeyValueStore: one place, so that builders,
// the reconciler and tests agree.
func StatefulSetName(kvs *KeyValueStore) string     { return kvs.Name }
func DeploymentName(kvs *KeyValueStore) string      { return kvs.Name }
func ClientServiceName(kvs *KeyValueStore) string   { return kvs.Name }
func HeadlessServiceName(kvs *KeyValueStore) string { return kvs.Name + "-peers" }
func PDBName(kvs *KeyValueStore) string             { return kvs.Name }
func HPAName(kvs *KeyValueStore) string             { return kvs.Name }

// CASecretName holds the CA's private key; only the operator reads it.
func CASecretName(kvs *KeyValueStore) string { return kvs.Name + "-ca" }

// TLSSecretName is the Secret the pods mount: ca.crt, tls.crt/key, peer.crt/key.
func TLSSecretName(kvs *KeyValueStore) string {
	if kvs.Spec.TLS.SecretName != nil && *kvs.Spec.TLS.SecretName != "" {
		return *kvs.Spec.TLS.SecretName
	}
	return kvs.Name + "-tls"
}

// PodMonitorName is the Prometheus Operator's PodMonitor of the store.
func PodMonitorName(kvs *KeyValueStore) string { return kvs.Name }

// AdminSecretName holds the operator's admin client certificate.
func AdminSecretName(kvs *KeyValueStore) string { return kvs.Name + "-admin" }

// CAConfigMapName holds the CA bundle alone (ca.crt), for clients and
// for Prometheus: they never need a Secret that holds private keys to
// trust the store.
func CAConfigMapName(kvs *KeyValueStore) string { return kvs.Name + "-ca" }

// AccessConfigMapName holds the access rules the pods enforce
// (access.RulesFile), written from spec.clients.
func AccessConfigMapName(kvs *KeyValueStore) string { return kvs.Name + "-clients" }

// ClientSecretName holds client name's certificate: ca.crt, tls.crt, tls.key.
func ClientSecretName(kvs *KeyValueStore, name string) string { return kvs.Name + "-client-" + name }

// NetworkPolicyName is the NetworkPolicy of spec.networkPolicy.
func NetworkPolicyName(kvs *KeyValueStore) string { return kvs.Name }

// PeerDomain is the DNS domain of the members (the headless Service's):
// every member's name is <pod>.<PeerDomain>, and a peer certificate must
// name a host in it.
func PeerDomain(kvs *KeyValueStore) string {
	return fmt.Sprintf("%s.%s.svc", HeadlessServiceName(kvs), kvs.Namespace)
}

// DataClaimName is the volume claim of pod i (the StatefulSet's claim
// template is named "data").
func DataClaimName(kvs *KeyValueStore, i int) string { return "data-" + PodName(kvs, i) }

// BackupClaimName is the claim the operator creates for backups of store
// when a volume destination names none. It is not owned by the store.
func BackupClaimName(store string) string { return store + "-backups" }

// BackupJobName is the Job of a KeyValueStoreBackup.
func BackupJobName(b *KeyValueStoreBackup) string { return b.Name + "-backup" }

// RestoreJobName is the Job that restores pod 0's volume of a store.
func RestoreJobName(kvs *KeyValueStore) string { return kvs.Name + "-restore" }

// PodName is the name of member i.
func PodName(kvs *KeyValueStore, i int) string { return fmt.Sprintf("%s-%d", StatefulSetName(kvs), i) }

// PodOrdinal is the ordinal i of podName when it is PodName(kvs, i);
// false for any other name (another store's pod, a member added by hand).
func PodOrdinal(kvs *KeyValueStore, podName string) (int, bool) {
	rest, ok := strings.CutPrefix(podName, StatefulSetName(kvs)+"-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || PodName(kvs, i) != podName {
		return 0, false
	}
	return i, true
}

// PodDNSName is member i's stable DNS name.
func PodDNSName(kvs *KeyValueStore, i int) string {
	return PodName(kvs, i) + "." + PeerDomain(kvs)
}

// PodAPIURL is the URL of member i's API.
func PodAPIURL(kvs *KeyValueStore, i int) string {
	return fmt.Sprintf("https://%s:%d", PodDNSName(kvs, i), APIPort)
}

// PodPeerAddress is member i's Raft address.
func PodPeerAddress(kvs *KeyValueStore, i int) string {
	return fmt.Sprintf("%s:%d", PodDNSName(kvs, i), PeerPort)
}

// Endpoint is the URL of the client Service.
func Endpoint(kvs *KeyValueStore) string {
	return fmt.Sprintf("https://%s.%s.svc:%d", ClientServiceName(kvs), kvs.Namespace, APIPort)
}

// The common labels. The operator's cache holds only the Secrets and pods
// labelled LabelManagedBy=ManagedBy, and only the claims labelled
// LabelName=LabelNameKVNode (controllers.CacheOptions).
const (
	LabelName       = "app.kubernetes.io/name"
	LabelNameKVNode = "kvnode"
	LabelInstance   = "app.kubernetes.io/instance"
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "kvstore-operator"
)

// SelectorLabels select the pods of a KeyValueStore.
func SelectorLabels(kvs *KeyValueStore) map[string]string {
	return map[string]string{
		LabelName:     LabelNameKVNode,
		LabelInstance: kvs.Name,
	}
}

// StoreOfPod returns the name of the store whose pod carries labels
// (SelectorLabels), and false for any other pod.
func StoreOfPod(labels map[string]string) (string, bool) {
	name := labels["app.kubernetes.io/instance"]
	return name, name != "" && labels["app.kubernetes.io/name"] == "kvnode"
}

// Labels are put on every object of a KeyValueStore.
func Labels(kvs *KeyValueStore) map[string]string {
	l := SelectorLabels(kvs)
	l[LabelManagedBy] = ManagedBy
	l["app.kubernetes.io/part-of"] = "kvstore"
	return l
}

// Voters is spec.replicas with its default.
func (kvs *KeyValueStore) Voters() int32 {
	if kvs.Spec.Replicas == nil {
		return 3
	}
	return *kvs.Spec.Replicas
}

// Replicas is spec.replicas with its default: the voters of a raft
// store, the pods of a postgres one.
func (kvs *KeyValueStore) Replicas() int32 { return kvs.Voters() }

// MonitoringEnabled reports whether the operator keeps a PodMonitor for
// the store (when the Prometheus Operator's API is installed).
func (kvs *KeyValueStore) MonitoringEnabled() bool {
	m := kvs.Spec.Monitoring
	return m == nil || m.Enabled == nil || *m.Enabled
}

// AutoscalingEnabled reports whether the HPA owns the pod count.
func (kvs *KeyValueStore) AutoscalingEnabled() bool {
	return kvs.Spec.Autoscaling != nil && kvs.Spec.Autoscaling.Enabled
}
