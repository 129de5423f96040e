// Package opmetrics owns the operator's own Prometheus metrics, served
// with controller-runtime's (controller_runtime_reconcile_time_seconds and
// the like) on the manager's metrics endpoint. The per-store gauges come
// from what the operator observed of each store, so that the alerts in
// config/monitoring hold when every kvnode pod is down and nothing is
// left to scrape there.
//
// The namespace and store labels name the KeyValueStore: scrape the
// operator with honor_labels (honorLabels: true) so that they are kept
// and not renamed to exported_namespace.
package opmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

var (
	storeLabels = []string{"namespace", "store"}

	desiredVoters = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_store_desired_voters", Help: "Voters the store's spec.replicas asks for.",
	}, storeLabels)
	voters = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_store_voters", Help: "Voters in the store's Raft configuration as its leader last reported it (0 when no leader answered).",
	}, storeLabels)
	healthyVoters = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_store_healthy_voters", Help: "Voters the leader last reported healthy (reachable and caught up).",
	}, storeLabels)
	hasLeader = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_store_has_leader", Help: "1 when the store's members last reported a leader (status.leader).",
	}, storeLabels)
	certNotAfter = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_certificate_not_after_timestamp_seconds", Help: "Expiry of the store's server certificate as the operator last read it (status.certificateNotAfter).",
	}, storeLabels)

	membershipSteps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvstore_operator_membership_steps_total", Help: "Raft membership steps the operator made, by action and result (ok or error).",
	}, []string{"action", "result"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvstore_operator_reconcile_errors_total", Help: "KeyValueStore reconciles that failed, by the step that failed.",
	}, []string{"step"})

	backupLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_backup_last_success_timestamp_seconds",
		Help: "Completion time of the store's newest succeeded backup; while none has succeeded, the store's creation time (from when a backup is owed).",
	}, storeLabels)
	backupInterval = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvstore_operator_backup_schedule_interval_seconds", Help: "Interval of the store's spec.backup.schedule; absent without a schedule or while it is suspended.",
	}, storeLabels)
	backupFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvstore_operator_backup_failed_total", Help: "KeyValueStoreBackups that ended Failed.",
	}, storeLabels)
)

func init() {
	metrics.Registry.MustRegister(desiredVoters, voters, healthyVoters, hasLeader, certNotAfter,
		membershipSteps, reconcileErrors, backupLastSuccess, backupInterval, backupFailed)
}

// ObserveStore exports the store's status as just computed.
func ObserveStore(kvs *kvv1.KeyValueStore) {
	l := prometheus.Labels{"namespace": kvs.Namespace, "store": kvs.Name}
	st := kvs.Status
	healthy := 0
	for _, m := range st.Members {
		if m.Role == clusterapi.RoleVoter && m.Healthy {
			healthy++
		}
	}
	if kvs.PostgresLog() {
		// No voters and no leader, ever: series at 0 would raise the
		// no-leader and quorum alerts for a store that has neither.
		for _, v := range []*prometheus.GaugeVec{desiredVoters, voters, healthyVoters, hasLeader} {
			v.Delete(l)
		}
	} else {
		desiredVoters.With(l).Set(float64(kvs.Voters()))
		voters.With(l).Set(float64(st.Voters))
		healthyVoters.With(l).Set(float64(healthy))
		hasLeader.With(l).Set(b2f(st.Leader != ""))
	}
	if st.CertificateNotAfter != nil {
		certNotAfter.With(l).Set(float64(st.CertificateNotAfter.Unix()))
	}
}

// ForgetStore drops every series of a store that is gone.
func ForgetStore(namespace, store string) {
	l := prometheus.Labels{"namespace": namespace, "store": store}
	for _, v := range []*prometheus.GaugeVec{desiredVoters, voters, healthyVoters, hasLeader, certNotAfter, backupLastSuccess, backupInterval} {
		v.Delete(l)
	}
	backupFailed.Delete(l)
}

// MembershipStep counts a membership step and whether it was made.
func MembershipStep(action string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	membershipSteps.WithLabelValues(action, result).Inc()
}

// ReconcileError counts a reconcile that failed in step.
func ReconcileError(step string) { reconcileErrors.WithLabelValues(step).Inc() }

// BackupFailed counts a backup of store that ended Failed.
func BackupFailed(namespace, store string) { backupFailed.WithLabelValues(namespace, store).Inc() }

// BackupSchedule exports when a backup of the store last succeeded (or,
// before the first, since when one is owed) and how often its schedule
// fires; interval 0 means no schedule is in force.
func BackupSchedule(namespace, store string, lastSuccess time.Time, interval time.Duration) {
	l := prometheus.Labels{"namespace": namespace, "store": store}
	// At 0 before the first failure: increase() misses the first
	// increment of a series that appears with it.
	backupFailed.With(l)
	backupLastSuccess.With(l).Set(float64(lastSuccess.Unix()))
	if interval <= 0 {
		backupInterval.Delete(l)
		return
	}
	backupInterval.With(l).Set(interval.Seconds())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
