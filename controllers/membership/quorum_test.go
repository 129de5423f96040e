package membership

import (
	"fmt"
	"strings"
	"testing"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

func name(i int) string { return fmt.Sprintf("kv-%d", i) }

func view(voters int) *clusterapi.Cluster {
	v := &clusterapi.Cluster{ClusterID: "c"}
	for i := 0; i < voters; i++ {
		v.Members = append(v.Members, clusterapi.Member{ID: name(i), Role: clusterapi.RoleVoter})
	}
	return v
}

func TestQuorumLoss(t *testing.T) {
	survivor := Report{Ordinal: 0, HasState: true, LastIndex: 90, Term: 4}
	ahead := Report{Ordinal: 2, HasState: true, LastIndex: 95, Term: 4}
	lost := func(i int) Report { return Report{Ordinal: i, NewVolume: true} }
	for _, tc := range []struct {
		name string
		o    Observation
		want string // "" or a part of the message
	}{
		{"a leader answers", Observation{View: &clusterapi.Cluster{Leader: "kv-0", Members: view(3).Members}, Reports: []Report{lost(1), lost(2)}}, ""},
		{"one of three lost: a majority may be alive", Observation{View: view(3), Reports: []Report{survivor, lost(1)}}, ""},
		{"two of three silent: they may come back", Observation{View: view(3), Reports: []Report{survivor}}, ""},
		{"two of three lost", Observation{View: view(3), Reports: []Report{survivor, lost(1), lost(2)}}, "most up-to-date survivor is kv-0 (last index 90"},
		{"three of five lost, the furthest survivor is named", Observation{View: view(5), Reports: []Report{survivor, lost(1), ahead, lost(3), lost(4)}}, "survivor is kv-2 (last index 95"},
		{"all lost", Observation{View: view(3), Reports: []Report{lost(0), lost(1), lost(2)}}, "no surviving member answers"},
		{"nobody answers", Observation{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := QuorumLoss(tc.o, name)
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("QuorumLoss = %q, want %q", got, tc.want)
			}
		})
	}
}

// A lost quorum changes nothing by itself; with a survivor named, the one
// step is to recover from it.
func TestPlanOnQuorumLoss(t *testing.T) {
	o := Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Leader: -1, QuorumLost: "quorum lost"}
	if d := Plan(o); d.Step != (Step{}) || d.Keep != 3 {
		t.Fatalf("quorum lost, nobody named: %+v", d)
	}
	zero := 0
	o.RecoverFrom = &zero
	if d := Plan(o); d.Step != (Step{Action: kvv1.ActionRecover, Ordinal: 0}) || d.Keep != 3 {
		t.Fatalf("quorum lost, pod 0 named: %+v", d)
	}
	o.QuorumLost = ""
	o.Members, o.Leader = voters(3), 0
	if d := Plan(o); d.Step.Action == kvv1.ActionRecover {
		t.Fatalf("a store with a quorum is recovered: %+v", d)
	}
}
