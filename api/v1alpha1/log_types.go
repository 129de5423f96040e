package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// LogType says where a store's transaction log lives, and so what the
// operator runs: a Raft cluster of kvnodes with a volume each, or kvnodes
// without state in front of a PostgreSQL table.
type LogType string

const (
	// LogRaft: the kvnodes replicate their log with Raft, each on its own
	// volume, in a StatefulSet; the operator manages the membership.
	LogRaft LogType = "raft"
	// LogPostgres: the log is a table in PostgreSQL, which orders every
	// write; the kvnodes keep nothing of their own and run in a
	// Deployment.
	LogPostgres LogType = "postgres"
)

// LogSpec chooses the store's transaction log. The rules keep
// spec.log.postgres where it means something (and only there), and the
// type fixed: the data is in one log or the other, and no reconcile can
// carry it across.
//
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type != 'postgres' || has(self.postgres)",message="log.postgres is required when log.type is postgres: it says which database holds the log",fieldPath=".postgres"
// +kubebuilder:validation:XValidation:rule="(has(self.type) && self.type == 'postgres') || !has(self.postgres)",message="log.postgres may be set only when log.type is postgres",fieldPath=".postgres"
type LogSpec struct {
	// Type is raft (the default: the kvnodes replicate their log with
	// Raft, each on its own volume, in a StatefulSet) or postgres (the log
	// is a table in PostgreSQL, which orders every write; the kvnodes are
	// stateless, in a Deployment with no volumes, and scale freely).
	// Immutable: a store cannot change its log type, as its data would not
	// follow.
	// +kubebuilder:validation:Enum=raft;postgres
	// +kubebuilder:default=raft
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="log.type is immutable: a store cannot change its log type, as its data would not follow; create a new store instead"
	// +optional
	Type LogType `json:"type,omitempty"`

	// Postgres is the database that holds the log: required when type is
	// postgres, and forbidden otherwise.
	// +optional
	Postgres *PostgresLogSpec `json:"postgres,omitempty"`
}

// PostgresLogSpec is the PostgreSQL database a store's log lives in. The
// kvnodes connect with the credentials of SecretRef, read as environment
// variables from the Secret (never written into the pod template), and
// refuse a database whose log belongs to another store.
//
// +kubebuilder:validation:XValidation:rule="!has(self.sslMode) || !(self.sslMode in ['verify-ca', 'verify-full']) || has(self.caSecretRef)",message="log.postgres.caSecretRef is required with sslMode verify-ca or verify-full: it holds the CA that verifies the server",fieldPath=".caSecretRef"
type PostgresLogSpec struct {
	// Host of the PostgreSQL server: a DNS name or an IP address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="log.postgres.host is immutable: pods on the old and the new database would serve side by side during the rollout; to move the log, delete the store and create it again on the new database (its pods keep nothing)"
	Host string `json:"host"`

	// Port of the PostgreSQL server.
	// +kubebuilder:default=5432
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="log.postgres.port is immutable: pods on the old and the new database would serve side by side during the rollout; to move the log, delete the store and create it again on the new database (its pods keep nothing)"
	Port int32 `json:"port,omitempty"`

	// Database that holds the log table.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="log.postgres.database is immutable: pods on the old and the new database would serve side by side during the rollout; to move the log, delete the store and create it again on the new database (its pods keep nothing)"
	Database string `json:"database"`

	// SecretRef names a Secret in the store's namespace with the keys
	// username and password.
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="log.postgres.secretRef.name is required: the Secret with the keys username and password"
	SecretRef corev1.LocalObjectReference `json:"secretRef"`

	// SSLMode as libpq means it: disable (no TLS), require (the default:
	// encrypted, the server not verified), verify-ca (the server's
	// certificate is signed by the CA of CASecretRef) or verify-full (and
	// names Host).
	// +kubebuilder:validation:Enum=disable;require;verify-ca;verify-full
	// +kubebuilder:default=require
	// +optional
	SSLMode string `json:"sslMode,omitempty"`

	// CASecretRef names a Secret in the store's namespace with the key
	// ca.crt: the PEM CA that verifies the server. verify-ca and
	// verify-full need it.
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="log.postgres.caSecretRef.name is required: the Secret with the key ca.crt"
	// +optional
	CASecretRef *corev1.LocalObjectReference `json:"caSecretRef,omitempty"`
}

// PostgresLog reports whether the store's log is in PostgreSQL: the
// operator then runs a Deployment, and nothing of Raft (membership,
// volumes, backups) applies.
func (kvs *KeyValueStore) PostgresLog() bool {
	return kvs.Spec.Log.Type == LogPostgres
}
