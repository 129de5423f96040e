package opmetrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if g := d.GetGauge(); g != nil {
		return g.GetValue()
	}
	return d.GetCounter().GetValue()
}

func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestObserveStoreCountsHealthyVotersOnly(t *testing.T) {
	kvs := &kvv1.KeyValueStore{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Spec: kvv1.KeyValueStoreSpec{Replicas: ptr.To[int32](3)}}
	kvs.Status.Voters, kvs.Status.Leader = 3, "s-0"
	kvs.Status.Members = []kvv1.MemberStatus{
		{Name: "s-0", Role: clusterapi.RoleVoter, Healthy: true},
		{Name: "s-1", Role: clusterapi.RoleVoter, Healthy: false},
		{Name: "s-2", Role: clusterapi.RoleVoter, Healthy: true},
		{Name: "s-3", Role: clusterapi.RoleNonVoter, Healthy: true},
	}
	ObserveStore(kvs)
	l := prometheus.Labels{"namespace": "ns", "store": "s"}
	for name, tc := range map[string]struct {
		got  prometheus.Metric
		want float64
	}{
		"desired voters": {desiredVoters.With(l), 3},
		"voters":         {voters.With(l), 3},
		"healthy voters": {healthyVoters.With(l), 2},
		"has leader":     {hasLeader.With(l), 1},
	} {
		if got := value(t, tc.got); got != tc.want {
			t.Errorf("%s = %v, want %v", name, got, tc.want)
		}
	}

	kvs.Status.Leader = ""
	ObserveStore(kvs)
	if value(t, hasLeader.With(l)) != 0 {
		t.Error("has_leader stays 1 without a leader")
	}

	BackupSchedule("ns", "s", time.Unix(1000, 0), time.Hour)
	if value(t, backupInterval.With(l)) != 3600 || value(t, backupLastSuccess.With(l)) != 1000 {
		t.Error("backup schedule not exported")
	}
	BackupSchedule("ns", "s", time.Unix(1000, 0), 0)
	if count(backupInterval) != 0 {
		t.Error("a schedule no longer in force still has an interval")
	}
	BackupFailed("ns", "s")
	ForgetStore("ns", "s")
	for name, c := range map[string]prometheus.Collector{"healthy voters": healthyVoters, "has leader": hasLeader, "last success": backupLastSuccess, "failed": backupFailed} {
		if n := count(c); n != 0 {
			t.Errorf("%s: %d series left of a store that is gone", name, n)
		}
	}
}

// A store whose log is in PostgreSQL has no Raft series: the no-leader
// and quorum alerts would fire for it for ever.
func TestObserveStoreWithoutRaft(t *testing.T) {
	kvs := &kvv1.KeyValueStore{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg"}, Spec: kvv1.KeyValueStoreSpec{Replicas: ptr.To[int32](3)}}
	kvs.Status.CertificateNotAfter = &metav1.Time{Time: time.Unix(2000, 0)}
	kvs.Spec.Log.Type = kvv1.LogPostgres
	ObserveStore(kvs)
	l := prometheus.Labels{"namespace": "ns", "store": "pg"}
	for name, v := range map[string]*prometheus.GaugeVec{"desired voters": desiredVoters, "voters": voters, "healthy voters": healthyVoters, "has leader": hasLeader} {
		if v.Delete(l) {
			t.Errorf("%s exported for a store without Raft", name)
		}
	}
	if value(t, certNotAfter.With(l)) != 2000 {
		t.Error("the certificate's expiry not exported")
	}
	ForgetStore("ns", "pg")
}

func TestMembershipStepResult(t *testing.T) {
	MembershipStep(kvv1.ActionPromote, nil)
	MembershipStep(kvv1.ActionPromote, errors.New("no leader"))
	ok := value(t, membershipSteps.WithLabelValues(kvv1.ActionPromote, "ok"))
	bad := value(t, membershipSteps.WithLabelValues(kvv1.ActionPromote, "error"))
	if ok != 1 || bad != 1 {
		t.Fatalf("ok %v error %v", ok, bad)
	}
}
