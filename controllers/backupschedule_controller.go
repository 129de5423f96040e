package controllers

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// BackupScheduleReconciler makes the KeyValueStoreBackups that
// spec.backup.schedule asks for, and deletes the scheduled ones beyond
// spec.backup.keep (the backup Job prunes their files in the same way).
type BackupScheduleReconciler struct {
	client.Client
	Recorder EventRecorder
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// SetupWithManager registers the reconciler: a second controller on
// KeyValueStores, which owns no object and only writes
// status.lastScheduledBackup.
func (r *BackupScheduleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kvv1.KeyValueStore{}).
		Named("backupschedule").
		WithOptions(controllerOptions(mgr, "backupschedule", "keyvaluestore")).
		Complete(r)
}

// ScheduledBackupName is the name of the backup of store scheduled at t:
// one name per scheduled time, so that a reconcile that runs twice
// creates one backup, and name order is time order.
func ScheduledBackupName(store string, t time.Time) string {
	return store + "-" + t.UTC().Format("20060102150405")
}

// Reconcile creates the backup of the latest scheduled time not yet
// taken (missed ones are not made up: one backup, the newest), then
// prunes.
func (r *BackupScheduleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kvs := &kvv1.KeyValueStore{}
	if err := r.Get(ctx, req.NamespacedName, kvs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if err := r.exportBackupMetrics(ctx, kvs); err != nil {
		return ctrl.Result{}, err
	}
	bs := kvs.Spec.Backup
	if !kvs.DeletionTimestamp.IsZero() || bs == nil {
		return ctrl.Result{}, nil
	}
	sched, err := cron.ParseStandard(bs.Schedule)
	if err != nil {
		r.event(kvs, corev1.EventTypeWarning, "InvalidSchedule", fmt.Sprintf("spec.backup.schedule %q: %v", bs.Schedule, err))
		return ctrl.Result{}, nil // a new spec brings a new reconcile
	}
	now := r.Now()
	first := sched.Next(now)
	if first.IsZero() {
		r.event(kvs, corev1.EventTypeWarning, "InvalidSchedule", fmt.Sprintf("spec.backup.schedule %q never fires", bs.Schedule))
		return ctrl.Result{}, nil
	}
	if gap := sched.Next(first).Sub(first); gap < MinBackupInterval {
		r.event(kvs, corev1.EventTypeWarning, "InvalidSchedule", fmt.Sprintf("spec.backup.schedule %q fires every %s; the shortest interval is %s", bs.Schedule, gap, MinBackupInterval))
		return ctrl.Result{}, nil
	}
	running, err := r.prune(ctx, kvs, int(bs.Keep))
	if err != nil {
		return ctrl.Result{}, err
	}
	if bs.Suspend {
		return ctrl.Result{}, nil
	}
	last := kvs.CreationTimestamp.Time
	if t := kvs.Status.LastScheduledBackup; t != nil {
		last = t.Time
	}
	due := time.Time{}
	for next, n := sched.Next(last), 0; !next.After(now) && n < 100000; next, n = sched.Next(next), n+1 {
		due = next
	}
	// One at a time: a run not yet finished (the store without a leader,
	// a slow upload) is not joined by the next; the due time is taken
	// once it has ended.
	if !due.IsZero() && running == "" {
		b := &kvv1.KeyValueStoreBackup{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: kvs.Namespace, Name: ScheduledBackupName(kvs.Name, due),
				Labels: map[string]string{kvv1.LabelBackupStore: kvs.Name, kvv1.LabelBackupScheduled: "true", kvv1.LabelBackupStoreUID: string(kvs.UID)},
			},
			Spec: kvv1.KeyValueStoreBackupSpec{Store: kvs.Name, Destination: bs.Destination},
		}
		if err := r.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create scheduled backup %s: %w", b.Name, err)
		}
		before := kvs.DeepCopy()
		kvs.Status.LastScheduledBackup = &metav1.Time{Time: due}
		if err := r.Status().Patch(ctx, kvs, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, err
		}
	}
	if running != "" {
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: max(first.Sub(now), time.Second)}, nil
}

// MinBackupInterval is the shortest interval a schedule may have: a
// backup copies the whole store.
const MinBackupInterval = 15 * time.Second

// prune deletes the scheduled backups of this store (its UID: not an
// earlier store's of the same name) older than the newest keep that
// succeeded, and never one a store's spec.restore names. It returns the
// name of a scheduled backup still pending or running, if any.
func (r *BackupScheduleReconciler) prune(ctx context.Context, kvs *kvv1.KeyValueStore, keep int) (string, error) {
	list := &kvv1.KeyValueStoreBackupList{}
	if err := r.List(ctx, list, client.InNamespace(kvs.Namespace), client.MatchingLabels{kvv1.LabelBackupStoreUID: string(kvs.UID), kvv1.LabelBackupScheduled: "true"}); err != nil {
		return "", err
	}
	stores := &kvv1.KeyValueStoreList{}
	if err := r.List(ctx, stores, client.InNamespace(kvs.Namespace)); err != nil {
		return "", err
	}
	restoring := map[string]bool{}
	for _, s := range stores.Items {
		if s.Spec.Restore != nil && s.Spec.Restore.BackupName != "" {
			restoring[s.Spec.Restore.BackupName] = true
		}
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool { return items[i].Name > items[j].Name }) // newest first
	kept, running := 0, ""
	for i := range items {
		b := &items[i]
		finished := b.Status.Phase == kvv1.BackupSucceeded || b.Status.Phase == kvv1.BackupFailed
		if !finished && b.DeletionTimestamp.IsZero() {
			running = b.Name
		}
		if kept >= keep && finished && !restoring[b.Name] {
			if err := r.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
				return "", err
			}
			continue
		}
		if b.Status.Phase == kvv1.BackupSucceeded {
			kept++
		}
	}
	return running, nil
}

func (r *BackupScheduleReconciler) event(kvs *kvv1.KeyValueStore, typ, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(kvs, nil, typ, reason, "ScheduleBackup", "%s", note)
	}
}
