package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupDestination says where backup files go: a PersistentVolumeClaim
// (the default, which needs nothing outside the cluster) or S3-compatible
// object storage. Set at most one of volume and s3; neither means a
// volume with the defaults.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.volume) && has(self.s3))",message="destination: set volume or s3, not both"
type BackupDestination struct {
	// Volume keeps backups on a PersistentVolumeClaim, under a directory
	// named after the store.
	// +optional
	Volume *VolumeDestination `json:"volume,omitempty"`
	// S3 keeps backups in a bucket of S3-compatible object storage.
	// +optional
	S3 *S3Destination `json:"s3,omitempty"`
}

// VolumeDestination is a PersistentVolumeClaim that holds backups.
type VolumeDestination struct {
	// ClaimName is an existing claim in the store's namespace. Empty: the
	// operator creates "<store>-backups" with Size and StorageClassName.
	// The claim is never owned by the store: backups outlive it.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClaimName string `json:"claimName,omitempty"`
	// Size of the claim the operator creates.
	// +kubebuilder:default="10Gi"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// StorageClassName of the claim the operator creates; empty means the
	// cluster default.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// S3Destination is a bucket of S3-compatible object storage.
type S3Destination struct {
	// Endpoint is the server's URL, http:// or https://.
	// +kubebuilder:validation:Pattern=`^https?://[^/?#\s]+/?$`
	Endpoint string `json:"endpoint"`
	// Bucket must exist.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`
	// Prefix of the object keys (a "directory" in the bucket).
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*([A-Za-z0-9_-][A-Za-z0-9._-]*)?$`
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Region of the bucket.
	// +kubebuilder:default="us-east-1"
	// +optional
	Region string `json:"region,omitempty"`
	// CredentialsSecret names a Secret in the store's namespace with the
	// keys accessKeyID and secretAccessKey.
	// +kubebuilder:validation:MinLength=1
	CredentialsSecret string `json:"credentialsSecret"`
	// CA is a key of a Secret in the store's namespace holding the PEM CA
	// bundle the server's certificate chains to, when it is not a public one.
	// +optional
	CA *corev1.SecretKeySelector `json:"ca,omitempty"`
}

// KeyValueStoreBackupSpec is the backup a user asks for. It is immutable:
// a backup is taken once.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create another backup"
type KeyValueStoreBackupSpec struct {
	// Store is a KeyValueStore in the same namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Store string `json:"store"`
	// Destination of the backup file.
	// +kubebuilder:default={}
	// +optional
	Destination BackupDestination `json:"destination,omitempty"`
}

// KeyValueStoreBackupStatus is what the backup did.
type KeyValueStoreBackupStatus struct {
	// Phase: Pending, Running, Succeeded or Failed.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Message says why the backup waits or failed.
	// +optional
	Message string `json:"message,omitempty"`
	// Job runs the backup.
	// +optional
	Job string `json:"job,omitempty"`
	// Location of the backup file: file:///<path on the claim> or
	// s3://<bucket>/<key>.
	// +optional
	Location string `json:"location,omitempty"`
	// Size of the backup file in bytes.
	// +optional
	Size int64 `json:"size,omitempty"`
	// Keys the backup holds.
	// +optional
	Keys int64 `json:"keys,omitempty"`
	// RaftIndex and RaftTerm of the last entry the backup covers.
	// +optional
	RaftIndex int64 `json:"raftIndex,omitempty"`
	// +optional
	RaftTerm int64 `json:"raftTerm,omitempty"`
	// ClusterID of the store the backup was taken from.
	// +optional
	ClusterID string `json:"clusterID,omitempty"`
	// SHA256 of the backup file up to its trailer.
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// StartTime and CompletionTime of the Job.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Conditions: Complete, Failed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// KeyValueStoreBackup is one consistent backup of a KeyValueStore.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName={kvsbackup,kvsbackups},categories=all
// +kubebuilder:printcolumn:name="Store",type=string,JSONPath=`.spec.store`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Keys",type=integer,JSONPath=`.status.keys`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name="Index",type=integer,JSONPath=`.status.raftIndex`
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.status.location`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 56",message="metadata.name may have at most 56 characters: the backup's Job is named <name>-backup"
type KeyValueStoreBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KeyValueStoreBackupSpec   `json:"spec,omitempty"`
	Status KeyValueStoreBackupStatus `json:"status,omitempty"`
}

// KeyValueStoreBackupList is a list of KeyValueStoreBackups.
//
// +kubebuilder:object:root=true
type KeyValueStoreBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KeyValueStoreBackup `json:"items"`
}

// BackupSchedule takes backups of a store on a schedule.
type BackupSchedule struct {
	// Schedule in cron syntax (five fields, as a CronJob's, or a
	// descriptor such as @daily), in UTC.
	// +kubebuilder:validation:XValidation:rule="self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9a-z.]+|[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+)$')",message="backup.schedule must be five cron fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily"
	// +kubebuilder:validation:MaxLength=128
	Schedule string `json:"schedule"`
	// Destination of the scheduled backups.
	// +kubebuilder:default={}
	// +optional
	Destination BackupDestination `json:"destination,omitempty"`
	// Keep is how many successful scheduled backups are kept; older ones
	// are deleted, objects and files.
	// +kubebuilder:default=7
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Keep int32 `json:"keep,omitempty"`
	// Suspend stops new scheduled backups; kept ones stay.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// RestoreSource is the backup a new store starts from: a
// KeyValueStoreBackup of this namespace, or a file in S3-compatible
// storage. Set exactly one.
//
// +kubebuilder:validation:XValidation:rule="has(self.backupName) != has(self.s3)",message="restore: set backupName or s3"
type RestoreSource struct {
	// BackupName is a succeeded KeyValueStoreBackup in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +optional
	BackupName string `json:"backupName,omitempty"`
	// S3 is a backup file in a bucket.
	// +optional
	S3 *S3Location `json:"s3,omitempty"`
}

// S3Location is one object in S3-compatible storage.
type S3Location struct {
	S3Destination `json:",inline"`
	// Key of the backup file in the bucket (after the prefix, if any).
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}
