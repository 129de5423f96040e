package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/backupjob"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
)

// syncRestore restores pod 0's volume from spec.restore before the
// StatefulSet exists: the claim the StatefulSet will give pod 0 is made
// first, a Job (package backupjob) runs `kvnode restore` on it, and only
// then does the StatefulSet start the pods. Pod 0 comes up as a
// one-member cluster with a new cluster ID; the operator adopts it (its
// volume holds a cluster) and the other members join as usual.
//
// A restore happens once: spec.restore can be set only at creation (the
// schema's rule), status.restoredFrom records it, and a StatefulSet that
// exists means the pods started. `kvnode restore` refuses a volume that
// already holds a cluster (a store re-created over retained claims) and a
// damaged backup; either leaves the store Degraded with the Job's message.
func (r *KeyValueStoreReconciler) syncRestore(ctx context.Context, st *state) result {
	kvs := st.kvs
	// Once the store has run, never again: not after status.restoredFrom
	// was recorded, not while a StatefulSet exists, and not on a store
	// that has been bootstrapped or has a cluster ID (its volumes hold its
	// data; a restore Job would open pod 0's live data directory).
	if kvs.Spec.Restore == nil || kvs.Status.RestoredFrom != "" || st.live != nil || kvs.Status.Bootstrapped || st.plan.ClusterID != "" {
		return done()
	}
	job := &batchv1.Job{}
	err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.RestoreJobName(kvs)}, job)
	if err == nil && !metav1.IsControlledBy(job, kvs) {
		// An earlier store of this name left it (its deletion not yet
		// collected): its result is not this store's.
		return waitFor("Job %s belongs to an earlier store named %s: waiting for it to be deleted", job.Name, kvs.Name)
	}
	switch {
	case apierrors.IsNotFound(err):
		src, wait, broken := r.restoreSource(ctx, kvs)
		if wait != "" {
			if broken {
				st.obs.restoreFailed = wait
			}
			return waitFor("%s", wait)
		}
		if err := r.ensureDataClaim(ctx, kvs); err != nil {
			return fail(err)
		}
		job = backupjob.Restore(kvs, src.dest, src.loc, src.sha256)
		job.Annotations = map[string]string{annotationRestoreSource: src.name, annotationRestoreSHA256: src.sha256}
		if err := controllerutil.SetControllerReference(kvs, job, r.Scheme()); err != nil {
			return fail(err)
		}
		if err := r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
			return fail(err)
		}
		r.event(kvs, corev1.EventTypeNormal, kvv1.ReasonRestoring, "Restore", fmt.Sprintf("restoring pod 0's volume from %s (Job %s)", src.name, job.Name))
		return waitFor("restoring pod 0's volume from %s", src.name)
	case err != nil:
		return fail(err)
	}
	// The claim the Job restored must still be there: a claim deleted
	// since would be made anew, empty, by the StatefulSet.
	claim := &corev1.PersistentVolumeClaim{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.DataClaimName(kvs, 0)}, claim); err != nil {
		return fail(fmt.Errorf("restore: claim %s: %w", kvv1.DataClaimName(kvs, 0), err))
	}
	pods, err := jobPods(ctx, r.APIReader, r.Client, job)
	if err != nil {
		return fail(err)
	}
	from := job.Annotations[annotationRestoreSource]
	o := backupjob.Observe(job, pods)
	res := o.Result
	if !o.Done {
		return waitFor("restoring pod 0's volume from %s", from)
	}
	why := orDefault(o.Message, res.Error)
	if want := job.Annotations[annotationRestoreSHA256]; why == "" && want != "" && res.SHA256 != want {
		why = fmt.Sprintf("the file restored has SHA-256 %q, the backup recorded %q", res.SHA256, want)
	}
	if why == "" && !o.Failed && res.Location == "" {
		why = "the restore Job finished without reporting a result"
	}
	if o.Failed || why != "" {
		msg := fmt.Sprintf("the restore from %s failed: %s (delete the store, or fix the cause and delete Job %s to try again)", from, why, job.Name)
		if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded); c == nil || c.Message != msg {
			r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonRestoreFailed, "Restore", msg)
		}
		st.obs.restoreFailed = msg
		return waitFor("%s", msg)
	}
	kvs.Status.RestoredFrom = fmt.Sprintf("%s: cluster %s at Raft index %d, %d keys", from, res.ClusterID, res.Index, res.Keys)
	r.event(kvs, corev1.EventTypeNormal, "Restored", "Restore", "restored pod 0's volume from "+kvs.Status.RestoredFrom)
	// Its work is recorded; a Job left behind would only be in the way
	// (a store re-created under this name). Were the status not saved,
	// the Job made again finds the restore done and changes nothing.
	if err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return fail(err)
	}
	return done()
}

// annotationRestoreSource on the restore Job says, for status and events,
// what it restores from.
const (
	annotationRestoreSource = "kv.kvstore.dev/restore-source"
	annotationRestoreSHA256 = "kv.kvstore.dev/restore-sha256"
)

// restoreSrc is what a restore reads.
type restoreSrc struct {
	dest              kvv1.BackupDestination
	loc, name, sha256 string
}

// restoreSource resolves spec.restore. wait says why it cannot yet;
// broken, that a person must act (the backup is missing or failed).
func (r *KeyValueStoreReconciler) restoreSource(ctx context.Context, kvs *kvv1.KeyValueStore) (src restoreSrc, wait string, broken bool) {
	rs := kvs.Spec.Restore
	if s3 := rs.S3; s3 != nil {
		loc := "s3://" + s3.Bucket + "/" + joinKey(s3.Prefix, s3.Key)
		return restoreSrc{dest: kvv1.BackupDestination{S3: s3.S3Destination.DeepCopy()}, loc: loc, name: loc}, "", false
	}
	b := &kvv1.KeyValueStoreBackup{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: rs.BackupName}, b); err != nil {
		return src, fmt.Sprintf("spec.restore.backupName: KeyValueStoreBackup %q: %v", rs.BackupName, err), true
	}
	switch b.Status.Phase {
	case kvv1.BackupSucceeded:
	case kvv1.BackupFailed:
		return src, fmt.Sprintf("spec.restore.backupName: KeyValueStoreBackup %q failed: %s", rs.BackupName, b.Status.Message), true
	default:
		return src, fmt.Sprintf("waiting for KeyValueStoreBackup %q to succeed (phase %q)", rs.BackupName, b.Status.Phase), false
	}
	d := *b.Spec.Destination.DeepCopy()
	if d.S3 == nil {
		// The claim the backup was written to, named in full: the default
		// one is named after the backup's store, not this one.
		d.Volume = &kvv1.VolumeDestination{ClaimName: backupjob.ClaimName(b.Spec.Destination, b.Spec.Store)}
	}
	return restoreSrc{dest: d, loc: b.Status.Location, name: "KeyValueStoreBackup " + b.Name, sha256: b.Status.SHA256}, "", false
}

func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	if prefix[len(prefix)-1] == '/' {
		return prefix + key
	}
	return prefix + "/" + key
}

// ensureDataClaim creates pod 0's claim as the StatefulSet would, so that
// the restore Job can write to it before the pod exists; the StatefulSet
// then adopts it by name.
func (r *KeyValueStoreReconciler) ensureDataClaim(ctx context.Context, kvs *kvv1.KeyValueStore) error {
	tmpl := statefulset.Build(kvs, nil).Spec.VolumeClaimTemplates[0]
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: kvs.Namespace, Name: kvv1.DataClaimName(kvs, 0), Labels: tmpl.Labels},
		Spec:       tmpl.Spec,
	}
	if err := r.Create(ctx, pvc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create claim %s: %w", pvc.Name, err)
	}
	return nil
}
