package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/backupjob"
	"github.com/kvstore-operator/kvstore-operator/controllers/opmetrics"
)

// KeyValueStoreBackupReconciler runs each KeyValueStoreBackup once, as a
// Job (package backupjob), and records what the Job reported.
type KeyValueStoreBackupReconciler struct {
	client.Client
	// APIReader reads the Job's pods around the cache (jobPods).
	// SetupWithManager sets it.
	APIReader client.Reader
	Recorder  EventRecorder
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestorebackups,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestorebackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;delete

// SetupWithManager registers the reconciler and what it watches.
func (r *KeyValueStoreBackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kvv1.KeyValueStoreBackup{}).
		Owns(&batchv1.Job{}).
		Named("keyvaluestorebackup").
		WithOptions(controllerOptions(mgr, "keyvaluestorebackup", "keyvaluestorebackup")).
		Complete(r)
}

// Reconcile moves a backup through Pending → Running → Succeeded or
// Failed. A finished backup is never run again: its status is its record.
func (r *KeyValueStoreBackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &kvv1.KeyValueStoreBackup{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !b.DeletionTimestamp.IsZero() || b.Status.Phase == kvv1.BackupSucceeded || b.Status.Phase == kvv1.BackupFailed {
		return ctrl.Result{}, nil
	}
	before := b.DeepCopy()
	after, err := r.step(ctx, b)
	if !equality.Semantic.DeepEqual(before.Status, b.Status) {
		if perr := r.Status().Patch(ctx, b, client.MergeFrom(before)); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		// A requeue with an error is ignored anyway (the backoff decides).
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

func (r *KeyValueStoreBackupReconciler) step(ctx context.Context, b *kvv1.KeyValueStoreBackup) (time.Duration, error) {
	pending := func(why string) (time.Duration, error) {
		b.Status.Phase, b.Status.Message = kvv1.BackupPending, why
		return 10 * time.Second, nil
	}
	kvs := &kvv1.KeyValueStore{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Store}, kvs); err != nil {
		if apierrors.IsNotFound(err) {
			return pending(fmt.Sprintf("waiting for KeyValueStore %q in this namespace", b.Spec.Store))
		}
		return 0, err
	}
	if kvs.PostgresLog() {
		// Refused for good, before any Job or claim is made: there is no
		// Raft log on the kvnodes to copy, and a copy through the key API
		// would be neither consistent nor what a restore could read.
		now := metav1.NewTime(r.Now())
		b.Status.Phase, b.Status.CompletionTime = kvv1.BackupFailed, &now
		b.Status.Message = fmt.Sprintf("KeyValueStore %q keeps its log in PostgreSQL (spec.log.type postgres): its backups are PostgreSQL's own (pg_dump, base backups, point-in-time recovery), not KeyValueStoreBackups", kvs.Name)
		meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: kvv1.BackupConditionFailed, Status: metav1.ConditionTrue, Reason: kvv1.BackupReasonPostgresLog, Message: b.Status.Message, ObservedGeneration: b.Generation})
		r.event(b, corev1.EventTypeWarning, "BackupRefused", b.Status.Message)
		opmetrics.BackupFailed(b.Namespace, b.Spec.Store)
		return 0, nil
	}
	job := &batchv1.Job{}
	err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: kvv1.BackupJobName(b)}, job)
	switch {
	case apierrors.IsNotFound(err):
		if !kvs.Status.Bootstrapped || kvs.Status.Leader == "" {
			return pending(fmt.Sprintf("waiting for KeyValueStore %q to have a leader", kvs.Name))
		}
		if err := ensureBackupClaim(ctx, r.Client, b.Namespace, b.Spec.Store, b.Spec.Destination); err != nil {
			return 0, err
		}
		keep := int32(0)
		if kvs.Spec.Backup != nil {
			keep = kvs.Spec.Backup.Keep
		}
		job = backupjob.Backup(kvs, b, keep)
		if err := controllerutil.SetControllerReference(b, job, r.Scheme()); err != nil {
			return 0, err
		}
		if err := r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, err
		}
		now := metav1.NewTime(r.Now())
		b.Status.Phase, b.Status.Message, b.Status.Job, b.Status.StartTime = kvv1.BackupRunning, "", job.Name, &now
		return 5 * time.Second, nil
	case err != nil:
		return 0, err
	}
	pods, err := jobPods(ctx, r.APIReader, r.Client, job)
	if err != nil {
		return 0, err
	}
	o := backupjob.Observe(job, pods)
	b.Status.Job = job.Name
	if b.Status.StartTime == nil {
		b.Status.StartTime = job.Status.StartTime
	}
	if !o.Done {
		b.Status.Phase = kvv1.BackupRunning
		return 5 * time.Second, nil
	}
	if o.Result.Location == "" && o.Result.Error == "" && time.Since(jobFinished(job)) < 10*time.Second {
		// The Job's status can reach the cache before its pod's, whose
		// termination message says what happened: a backup recorded now
		// would say only that the Job failed, for good. Cache lag is real
		// time, hence time.Since and not the reconciler's clock.
		return time.Second, nil
	}
	now := metav1.NewTime(r.Now())
	b.Status.CompletionTime = &now
	if job.Status.CompletionTime != nil {
		b.Status.CompletionTime = job.Status.CompletionTime
	}
	cond := func(t, reason, msg string) {
		meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: b.Generation})
	}
	res := o.Result
	if o.Failed || res.Location == "" {
		b.Status.Phase = kvv1.BackupFailed
		b.Status.Message = orDefault(o.Message, "the backup Job finished without reporting a result")
		cond(kvv1.BackupConditionFailed, "JobFailed", b.Status.Message)
		r.event(b, corev1.EventTypeWarning, "BackupFailed", b.Status.Message)
		opmetrics.BackupFailed(b.Namespace, b.Spec.Store)
		return 0, nil
	}
	b.Status.Phase, b.Status.Message = kvv1.BackupSucceeded, ""
	b.Status.Location, b.Status.Size, b.Status.SHA256, b.Status.ClusterID = res.Location, res.Size, res.SHA256, res.ClusterID
	b.Status.Keys, b.Status.RaftIndex, b.Status.RaftTerm = int64(res.Keys), int64(res.Index), int64(res.Term)
	msg := fmt.Sprintf("%d keys at Raft index %d, %d bytes, in %s", res.Keys, res.Index, res.Size, res.Location)
	cond(kvv1.BackupConditionComplete, "BackupComplete", msg)
	r.event(b, corev1.EventTypeNormal, "BackupComplete", msg)
	return 0, nil
}

// jobFinished is when job completed or failed.
func jobFinished(job *batchv1.Job) time.Time {
	if job.Status.CompletionTime != nil {
		return job.Status.CompletionTime.Time
	}
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func (r *KeyValueStoreBackupReconciler) event(b *kvv1.KeyValueStoreBackup, typ, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(b, nil, typ, reason, "Backup", "%s", note)
	}
}

// ensureBackupClaim creates the claim a volume destination without a
// claim name uses. It is owned by nothing: backups must outlive the store
// (a restore into a new store reads them).
func ensureBackupClaim(ctx context.Context, c client.Client, ns, store string, dest kvv1.BackupDestination) error {
	if dest.S3 != nil || (dest.Volume != nil && dest.Volume.ClaimName != "") {
		return nil
	}
	size := resource.MustParse("10Gi")
	var class *string
	if v := dest.Volume; v != nil {
		if v.Size != nil {
			size = v.Size.DeepCopy()
		}
		class = v.StorageClassName
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kvv1.BackupClaimName(store), Labels: map[string]string{kvv1.LabelBackupStore: store}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if err := c.Create(ctx, pvc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the backup claim %s: %w", pvc.Name, err)
	}
	return nil
}

// jobPods lists the pods of a backup or restore Job from the API server,
// not the cache: the cache holds only pods labelled as the operator's
// (CacheOptions), and the pods of a Job made by a version before that
// label lack it. It is one small, label-selected list per look at a
// running Job.
func jobPods(ctx context.Context, uncached, cached client.Reader, job *batchv1.Job) ([]corev1.Pod, error) {
	if uncached == nil {
		uncached = cached
	}
	pods := &corev1.PodList{}
	if err := uncached.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}
