// Package backupjob builds the Jobs that move backups: one that streams a
// store's backup (GET /v1/cluster/backup) to a volume claim or to S3, and
// one that restores pod 0's volume from a backup before the pod first
// starts. Both run `kvnode backup` / `kvnode restore` in the store's own
// kvnode image and report a backup.Result as their termination message.
//
// Why Jobs rather than the operator streaming the data itself
// (docs/backups.md): a backup of many gigabytes never passes through the
// operator's memory or dies with an operator restart; the S3 credentials
// stay in the store's namespace, read by the Job's pod and never by the
// operator; a volume destination needs a pod that mounts the claim anyway;
// and one path serves both destinations and restores.
package backupjob

import (
	"encoding/json"
	"path"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
)

const (
	uid        = 65532
	backupsDir = "/backups"
	adminDir   = "/etc/kvnode/admin"
	s3CADir    = "/etc/kvnode/s3-ca"
	dataDir    = "/var/lib/kvnode"
	// The kvnode image's binary (Dockerfile).
	kvnodeBin = "/kvnode"
)

// ScheduledDir is the directory (under the store's) of scheduled backups:
// retention prunes only there, never a backup a user asked for.
const ScheduledDir = "scheduled"

// Location is where backup name of store goes in dest, as a kvnode
// location URI. In a bucket, keys start with the namespace: a bucket may
// serve stores of several namespaces, and one namespace's store must
// never overwrite, prune or restore another's. Scheduled backups go
// under scheduled/<store UID>: retention prunes only there, so never a
// backup a user asked for, nor one of an earlier store of the same name.
func Location(dest kvv1.BackupDestination, ns, store string, uid types.UID, name string, scheduled bool) string {
	var parts []string
	if dest.S3 != nil {
		parts = append(parts, ns)
	}
	parts = append(parts, store)
	if scheduled {
		parts = append(parts, ScheduledDir, string(uid))
	}
	parts = append(parts, name+backup.FileExt)
	if dest.S3 != nil {
		return "s3://" + dest.S3.Bucket + "/" + path.Join(append([]string{strings.Trim(dest.S3.Prefix, "/")}, parts...)...)
	}
	return "file://" + path.Join(append([]string{backupsDir}, parts...)...)
}

// ClaimName is the claim a volume destination of store uses.
func ClaimName(dest kvv1.BackupDestination, store string) string {
	if dest.Volume != nil && dest.Volume.ClaimName != "" {
		return dest.Volume.ClaimName
	}
	return kvv1.BackupClaimName(store)
}

// Backup is the Job of b, a backup of kvs. keep > 0 prunes the scheduled
// backups in the same directory beyond the newest keep.
func Backup(kvs *kvv1.KeyValueStore, b *kvv1.KeyValueStoreBackup, keep int32) *batchv1.Job {
	scheduled := b.Labels[kvv1.LabelBackupScheduled] == "true"
	loc := Location(b.Spec.Destination, kvs.Namespace, kvs.Name, kvs.UID, b.Name, scheduled)
	args := []string{
		"backup",
		"--server", kvv1.Endpoint(kvs),
		"--ca", adminDir + "/ca.crt",
		"--cert", adminDir + "/tls.crt",
		"--key", adminDir + "/tls.key",
		"--to", loc,
		"--result-file", "/dev/termination-log",
	}
	if scheduled && keep > 0 {
		args = append(args, "--keep", strconv.Itoa(int(keep)), "--keep-prefix", kvs.Name+"-")
	}
	vols := []corev1.Volume{
		{Name: "admin", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: kvv1.AdminSecretName(kvs)}}},
	}
	mounts := []corev1.VolumeMount{{Name: "admin", MountPath: adminDir, ReadOnly: true}}
	args, env, vols, mounts := destination(b.Spec.Destination, kvs.Name, args, vols, mounts, false)
	return job(b.Namespace, kvv1.BackupJobName(b), kvs.Spec.Image, kvs.Spec.ImagePullPolicy, args, env, vols, mounts, jobLabels(kvs))
}

// Restore is the Job that restores pod 0's volume of kvs from the backup
// at loc, reached through dest. sha256, when known (a
// KeyValueStoreBackup's record), is what the file must hash to: a file
// replaced since is refused before anything is written.
func Restore(kvs *kvv1.KeyValueStore, dest kvv1.BackupDestination, loc, sha256 string) *batchv1.Job {
	args := []string{
		"restore",
		"--from", loc,
		"--data-dir", dataDir,
		"--node-id", kvv1.PodName(kvs, 0),
		"--peer-advertise", kvv1.PodPeerAddress(kvs, 0),
		"--result-file", "/dev/termination-log",
	}
	vols := []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: kvv1.DataClaimName(kvs, 0)}}},
	}
	if sha256 != "" {
		args = append(args, "--expect-sha256", sha256)
	}
	mounts := []corev1.VolumeMount{{Name: "data", MountPath: dataDir}}
	args, env, vols, mounts := destination(dest, kvs.Name, args, vols, mounts, true)
	// Not the pods' selector labels: the PodDisruptionBudget and the
	// Services select those, and a Job's pod is no member.
	j := job(kvs.Namespace, kvv1.RestoreJobName(kvs), kvs.Spec.Image, kvs.Spec.ImagePullPolicy, args, env, vols, mounts, jobLabels(kvs))
	// Where pod 0 may run: with local volumes, the claim is bound where
	// the Job runs, and pod 0 must be able to follow it.
	ps := &j.Spec.Template.Spec
	ps.NodeSelector, ps.Tolerations, ps.TopologySpreadConstraints = kvs.Spec.NodeSelector, kvs.Spec.Tolerations, kvs.Spec.TopologySpreadConstraints
	if a := kvs.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		ps.Affinity = &corev1.Affinity{NodeAffinity: a.NodeAffinity}
	}
	return j
}

// destination adds what reaching dest takes: the claim, or the S3 flags,
// credentials and CA.
func destination(dest kvv1.BackupDestination, store string, args []string, vols []corev1.Volume, mounts []corev1.VolumeMount, readOnly bool) ([]string, []corev1.EnvVar, []corev1.Volume, []corev1.VolumeMount) {
	var env []corev1.EnvVar
	if s3 := dest.S3; s3 != nil {
		region := s3.Region
		if region == "" {
			region = "us-east-1"
		}
		args = append(args, "--s3-endpoint", s3.Endpoint, "--s3-region", region)
		key := func(k string) *corev1.EnvVarSource {
			return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: s3.CredentialsSecret}, Key: k}}
		}
		env = append(env,
			corev1.EnvVar{Name: backup.EnvS3AccessKeyID, ValueFrom: key(backup.SecretKeyAccessKeyID)},
			corev1.EnvVar{Name: backup.EnvS3SecretAccessKey, ValueFrom: key(backup.SecretKeySecretAccessKey)},
		)
		if s3.CA != nil {
			vols = append(vols, corev1.Volume{Name: "s3-ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: s3.CA.Name, Items: []corev1.KeyToPath{{Key: s3.CA.Key, Path: "ca.crt"}},
			}}})
			mounts = append(mounts, corev1.VolumeMount{Name: "s3-ca", MountPath: s3CADir, ReadOnly: true})
			args = append(args, "--s3-ca", s3CADir+"/ca.crt")
		}
		return args, env, vols, mounts
	}
	vols = append(vols, corev1.Volume{Name: "backups", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
		ClaimName: ClaimName(dest, store), ReadOnly: readOnly,
	}}})
	mounts = append(mounts, corev1.VolumeMount{Name: "backups", MountPath: backupsDir, ReadOnly: readOnly})
	return args, env, vols, mounts
}

// jobLabels are on a Job and its pods: the store (the operator's cache
// holds the Jobs that carry it), and the label of everything the operator
// manages.
func jobLabels(kvs *kvv1.KeyValueStore) map[string]string {
	return map[string]string{kvv1.LabelBackupStore: kvs.Name, kvv1.LabelManagedBy: kvv1.ManagedBy}
}

func job(ns, name, image string, pull corev1.PullPolicy, args []string, env []corev1.EnvVar, vols []corev1.Volume, mounts []corev1.VolumeMount, labels map[string]string) *batchv1.Job {
	vols = append(vols, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	mounts = append(mounts, corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"})
	return &batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: batchv1.JobSpec{
			// A backup or restore cut short (a leader change mid-stream, a
			// node lost) is safe to run again: it writes under a temporary
			// name first, and a finished restore is a no-op.
			BackoffLimit: ptr.To[int32](3),
			// A new attempt starts only once the last one has ended: two
			// on one volume at once would race.
			PodReplacementPolicy:  ptr.To(batchv1.Failed),
			ActiveDeadlineSeconds: ptr.To[int64](6 * 3600),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					// The Job talks to the store and the destination, never
					// to the Kubernetes API.
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](uid), RunAsGroup: ptr.To[int64](uid), FSGroup: ptr.To[int64](uid),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes: vols,
					Containers: []corev1.Container{{
						Name:                     "kvnode",
						Image:                    image,
						ImagePullPolicy:          pull,
						Command:                  []string{kvnodeBin},
						Args:                     args,
						Env:                      env,
						VolumeMounts:             mounts,
						TerminationMessagePath:   "/dev/termination-log",
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// Outcome is what a Job's pods reported: whether it finished, and the
// backup.Result its last finished pod left as termination message.
type Outcome struct {
	Done, Failed bool
	Result       backup.Result
	// Message says why it failed, in one line.
	Message string
}

// Observe reads the outcome of job from its status and its pods.
func Observe(job *batchv1.Job, pods []corev1.Pod) Outcome {
	var o Outcome
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			o.Done = true
		case batchv1.JobFailed:
			o.Done, o.Failed = true, true
			o.Message = c.Reason + ": " + c.Message
		}
	}
	// The newest finished container's message: a success, or the last of
	// the failed attempts, which says why.
	var newest time.Time
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if t == nil || t.Message == "" {
				continue
			}
			if o.Done && !o.Failed && t.ExitCode != 0 {
				continue
			}
			if !t.FinishedAt.After(newest) && !newest.IsZero() {
				continue
			}
			newest = t.FinishedAt.Time
			var r backup.Result
			if err := json.Unmarshal([]byte(strings.TrimSpace(t.Message)), &r); err != nil {
				// FallbackToLogsOnError: the end of the log, not a result.
				r = backup.Result{Error: lastLine(t.Message)}
			}
			o.Result = r
		}
	}
	if o.Failed && o.Result.Error != "" {
		o.Message = o.Result.Error
	}
	return o
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := lines[len(lines)-1]
	if len(l) > 512 {
		l = l[:512]
	}
	return l
}
