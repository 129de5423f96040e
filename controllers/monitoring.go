package controllers

import (
	"context"
	"time"

	"github.com/robfig/cron/v3"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/opmetrics"
	"github.com/kvstore-operator/kvstore-operator/controllers/podmonitor"
)

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors,verbs=get;list;watch;create;update;patch;delete

// syncPodMonitor applies the store's PodMonitor, or deletes it with
// spec.monitoring.enabled=false. Without the Prometheus Operator's API it
// does nothing; the mapper is asked on every reconcile (it caches what it
// found), so CRDs installed after the operator started are picked up.
func (r *KeyValueStoreReconciler) syncPodMonitor(ctx context.Context, st *state) result {
	if _, err := r.RESTMapper().RESTMapping(podmonitor.GVK.GroupKind(), podmonitor.GVK.Version); err != nil {
		if meta.IsNoMatchError(err) {
			return done()
		}
		return fail(err)
	}
	if !st.kvs.MonitoringEnabled() {
		pm := &unstructured.Unstructured{}
		pm.SetGroupVersionKind(podmonitor.GVK)
		pm.SetNamespace(st.kvs.Namespace)
		pm.SetName(kvv1.PodMonitorName(st.kvs))
		return fail(ignoreAbsent(r.Delete(ctx, pm)))
	}
	pm, err := podmonitor.Build(st.kvs)
	if err != nil {
		return fail(err)
	}
	return fail(ignoreAbsent(applyUnstructured(ctx, r.Client, pm, FieldOwner)))
}

// ignoreAbsent drops the errors of a PodMonitor whose CRD went away after
// the mapper cached it, or is being deleted (creates are refused with 405
// then): nothing to scrape for, not a failed reconcile.
func ignoreAbsent(err error) error {
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) || apierrors.IsMethodNotSupported(err) {
		return nil
	}
	return err
}

// exportBackupMetrics exports when the store's newest backup succeeded
// and how often its schedule fires, read from the API on every reconcile
// so that an operator restart does not lose them (the backup-overdue
// alert compares the two).
func (r *BackupScheduleReconciler) exportBackupMetrics(ctx context.Context, kvs *kvv1.KeyValueStore) error {
	if !kvs.DeletionTimestamp.IsZero() {
		opmetrics.ForgetStore(kvs.Namespace, kvs.Name)
		return nil
	}
	list := &kvv1.KeyValueStoreBackupList{}
	if err := r.List(ctx, list, client.InNamespace(kvs.Namespace)); err != nil {
		return err
	}
	last := kvs.CreationTimestamp.Time
	for _, b := range list.Items {
		if b.Spec.Store == kvs.Name && b.Status.Phase == kvv1.BackupSucceeded && b.Status.CompletionTime != nil && b.Status.CompletionTime.After(last) {
			last = b.Status.CompletionTime.Time
		}
	}
	var interval time.Duration
	if bs := kvs.Spec.Backup; bs != nil && !bs.Suspend {
		// An invalid schedule is reported by an event; it owes no backup.
		if sched, err := cron.ParseStandard(bs.Schedule); err == nil {
			if first := sched.Next(r.Now()); !first.IsZero() {
				interval = sched.Next(first).Sub(first)
			}
		}
	}
	opmetrics.BackupSchedule(kvs.Namespace, kvs.Name, last, interval)
	return nil
}
