package backup

import "time"

// Result is what `kvnode backup` and `kvnode restore` report: on stdout
// and in --result-file (a Job's termination message). Apart from Location,
// Pruned and Error, its fields describe the backup: for a restore, the
// cluster ID is the one the backup was taken from, not the new cluster's.
type Result struct {
	Location  string    `json:"location"`
	Size      int64     `json:"size,omitempty"`
	SHA256    string    `json:"sha256,omitempty"`
	ClusterID string    `json:"clusterID,omitempty"`
	Index     uint64    `json:"index,omitempty"`
	Term      uint64    `json:"term,omitempty"`
	Keys      uint64    `json:"keys,omitempty"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// Pruned is how many older backups retention deleted.
	Pruned int `json:"pruned,omitempty"`
	// Error is why the command failed: one line, no credentials.
	Error string `json:"error,omitempty"`
}

// Env names the Jobs set for S3 credentials (from a Secret) and options.
const (
	EnvS3AccessKeyID     = "KV_S3_ACCESS_KEY_ID"
	EnvS3SecretAccessKey = "KV_S3_SECRET_ACCESS_KEY"
)

// Keys a user's S3 credentials Secret must hold.
const (
	SecretKeyAccessKeyID     = "accessKeyID"
	SecretKeySecretAccessKey = "secretAccessKey"
)

// FileExt is the extension of backup files.
const FileExt = ".kvbackup"
