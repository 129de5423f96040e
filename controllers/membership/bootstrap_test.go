package membership

import (
	"strings"
	"testing"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// empty is the reports of pods 0..n-1 on empty volumes.
func empty(n int) []Report {
	var r []Report
	for i := 0; i < n; i++ {
		r = append(r, Report{Ordinal: i})
	}
	return r
}

// with replaces the report of r.Ordinal.
func with(reports []Report, r Report) []Report {
	out := append([]Report(nil), reports...)
	for i := range out {
		if out[i].Ordinal == r.Ordinal {
			out[i] = r
			return out
		}
	}
	return append(out, r)
}

// A bootstrap starts a new, empty cluster, so it is made only when status
// says none was made and every pod says its volume holds no cluster: a
// store re-applied without status (GitOps, a restored manifest) over the
// volumes of a cluster that lost its quorum must find that cluster, not
// start another.
func TestPlanBootstrapGuard(t *testing.T) {
	for _, tc := range []struct {
		name         string
		o            Observed
		want         Step
		bootstrapped bool   // Decision.Bootstrapped
		clusterID    string // Decision.ClusterID
		waiting      bool
	}{
		{name: "every pod empty: bootstrap pod 0",
			o:    Observed{Voters: 3, Pods: 3, Running: ords(3), Reports: empty(3), Leader: -1},
			want: Step{kvv1.ActionBootstrap, 0}},
		{name: "pod 0 not running: wait",
			o: Observed{Voters: 3, Pods: 3, Running: []int{1, 2}, Reports: empty(3)[1:], Leader: -1}},
		{name: "pod 2 has not answered: it may hold the cluster, wait",
			o:       Observed{Voters: 3, Pods: 3, Running: ords(3), Reports: empty(2), Leader: -1},
			waiting: true},
		{name: "pod 2 not running at all: wait",
			o:       Observed{Voters: 3, Pods: 3, Running: ords(2), Reports: empty(2), Leader: -1},
			waiting: true},
		{name: "a running pod beyond the pod count has not answered: wait",
			o:       Observed{Voters: 1, Pods: 1, Running: ords(2), Reports: empty(1), Leader: -1},
			waiting: true},
		{name: "no status, pods report a cluster: adopt it, never bootstrap",
			o: Observed{Voters: 3, Pods: 3, Running: ords(3), Leader: -1,
				Reports: []Report{{Ordinal: 0, ClusterID: "c1", HasState: true}, {Ordinal: 1, ClusterID: "c1", HasState: true}, {Ordinal: 2, ClusterID: "c1", HasState: true}}},
			bootstrapped: true, clusterID: "c1"},
		{name: "pod 0 empty, pod 1 holds the cluster: adopt, never bootstrap",
			o: Observed{Voters: 3, Pods: 3, Running: ords(3), Leader: -1,
				Reports: with(empty(3), Report{Ordinal: 1, ClusterID: "c1", HasState: true})},
			bootstrapped: true, clusterID: "c1"},
		{name: "pod 0 empty, pod 2 has state but no cluster ID yet: a cluster exists, never bootstrap",
			o: Observed{Voters: 3, Pods: 3, Running: ords(3), Leader: -1,
				Reports: with(empty(3), Report{Ordinal: 2, ClusterID: "", HasState: true})},
			bootstrapped: true},
		{name: "pod 0 empty and pod 1 silent, pod 2 holds the cluster: adopt",
			o: Observed{Voters: 3, Pods: 3, Running: []int{0, 2}, Leader: -1,
				Reports: []Report{{Ordinal: 0, ClusterID: "", HasState: false}, {Ordinal: 2, ClusterID: "c1", HasState: true}}},
			bootstrapped: true, clusterID: "c1"},
		{name: "the adopted cluster is then planned on its leader's view",
			o: Observed{Voters: 3, Pods: 3, Running: ords(3), Leader: 1, Members: []Member{{Ordinal: 1, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 2, Voter: true, Healthy: true, CaughtUp: true}},
				Reports: with(empty(3), Report{Ordinal: 1, ClusterID: "c1", HasState: true})},
			want: Step{kvv1.ActionAddNonVoter, 0}, bootstrapped: true, clusterID: "c1"},
		{name: "status says bootstrapped: the recorded ID stands",
			o: Observed{Voters: 3, Pods: 3, Bootstrapped: true, ClusterID: "c1", Running: ords(3), Leader: -1,
				Reports: []Report{{Ordinal: 0, ClusterID: "", HasState: false}, {Ordinal: 1, ClusterID: "c1", HasState: true}, {Ordinal: 2, ClusterID: "", HasState: true}}},
			bootstrapped: true, clusterID: "c1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.o)
			if d.Step != tc.want || d.Bootstrapped != tc.bootstrapped || d.ClusterID != tc.clusterID || (d.Waiting != "") != tc.waiting || d.Blocked != "" || d.Mismatch != nil {
				t.Fatalf("Plan = %+v; want step %+v, bootstrapped %v, cluster %q, waiting %v", d, tc.want, tc.bootstrapped, tc.clusterID, tc.waiting)
			}
			if d.Keep != max(tc.o.Pods, tc.o.Current) {
				t.Fatalf("keep %d", d.Keep)
			}
		})
	}
}

// A pod that reports another cluster's ID than the one recorded (or than
// the other pods, when none is recorded) is not a member of this cluster:
// adding it, or acting on its view, would mix two clusters. No change is
// made until someone looks.
func TestPlanClusterIDMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Observed
		want Mismatch
	}{
		{name: "a pod of another cluster, with a leader's view that asks for a change",
			o: Observed{Voters: 3, Pods: 3, Bootstrapped: true, ClusterID: "c1", Running: ords(3), Members: voters(2), Leader: 0,
				Reports: []Report{{Ordinal: 0, ClusterID: "c1", HasState: true}, {Ordinal: 1, ClusterID: "c1", HasState: true}, {Ordinal: 2, ClusterID: "c2", HasState: true}}},
			want: Mismatch{Ordinal: 2, Reported: "c2", Expected: "c1", ExpectedFrom: -1}},
		{name: "every pod reports another cluster than recorded",
			o: Observed{Voters: 1, Pods: 1, Bootstrapped: true, ClusterID: "c1", Running: ords(1), Members: voters(1), Leader: 0,
				Reports: []Report{{Ordinal: 0, ClusterID: "c2", HasState: true}}},
			want: Mismatch{Ordinal: 0, Reported: "c2", Expected: "c1", ExpectedFrom: -1}},
		{name: "nothing recorded, the pods disagree: adopt neither, bootstrap nothing",
			o: Observed{Voters: 3, Pods: 3, Running: ords(3), Leader: -1,
				Reports: []Report{{Ordinal: 0, ClusterID: "", HasState: false}, {Ordinal: 1, ClusterID: "c1", HasState: true}, {Ordinal: 2, ClusterID: "c2", HasState: true}}},
			want: Mismatch{Ordinal: 2, Reported: "c2", Expected: "c1", ExpectedFrom: 1}},
		{name: "recorded, a scale-down asked: keep every pod",
			o: Observed{Voters: 1, Pods: 1, Current: 3, Bootstrapped: true, ClusterID: "c1", Running: ords(3), Members: voters(3), Leader: 0,
				Reports: []Report{{Ordinal: 0, ClusterID: "c1", HasState: true}, {Ordinal: 1, ClusterID: "c9", HasState: true}, {Ordinal: 2, ClusterID: "c1", HasState: true}}},
			want: Mismatch{Ordinal: 1, Reported: "c9", Expected: "c1", ExpectedFrom: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.o)
			if d.Mismatch == nil || *d.Mismatch != tc.want {
				t.Fatalf("mismatch %+v, want %+v", d.Mismatch, tc.want)
			}
			if d.Step != (Step{}) || d.Keep != max(tc.o.Pods, tc.o.Current) || !strings.Contains(d.Blocked, tc.want.Reported) {
				t.Fatalf("a mismatch must change nothing and say why: %+v", d)
			}
			if d.ClusterID != tc.o.ClusterID {
				t.Fatalf("cluster ID %q: a mismatch records nothing new", d.ClusterID)
			}
		})
	}
}
