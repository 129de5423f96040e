package membership

import (
	"testing"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

func voters(n int) []Member {
	var m []Member
	for i := 0; i < n; i++ {
		m = append(m, Member{Ordinal: i, Voter: true, Healthy: true, CaughtUp: true})
	}
	return m
}

func ords(n int) []int {
	var r []int
	for i := 0; i < n; i++ {
		r = append(r, i)
	}
	return r
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name     string
		o        Observed
		want     Step
		wantPods int
	}{
		{"new cluster waits for pod 0", Observed{Voters: 3, Pods: 3, Running: []int{1, 2}, Leader: -1}, Step{}, 3},
		{"new cluster bootstraps pod 0", Observed{Voters: 3, Pods: 3, Running: []int{0}, Leader: -1}, Step{kvv1.ActionBootstrap, 0}, 3},
		{"bootstrapped: never again, even if nothing answers", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: []int{0}, Leader: -1}, Step{}, 3},
		{"add pod 1 as non-voter", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: voters(1), Leader: 0}, Step{kvv1.ActionAddNonVoter, 1}, 3},
		{"pod 1 not running yet: wait", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: []int{0}, Members: voters(1), Leader: 0}, Step{}, 3},
		{"promote a caught-up non-voter",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{0, true, true, true}, {1, false, true, true}}, Leader: 0}, Step{kvv1.ActionAddNonVoter, 2}, 3},
		{"promote after every pod joined",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{0, true, true, true}, {1, false, true, true}, {2, false, true, false}}, Leader: 0}, Step{kvv1.ActionPromote, 1}, 3},
		{"do not promote one that lags",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{0, true, true, true}, {1, true, true, true}, {2, false, true, false}}, Leader: 0}, Step{}, 3},
		{"steady", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: voters(3), Leader: 1}, Step{}, 3},
		{"scale 5→3: remove 4 first, keep its pod",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(5), Members: voters(5), Leader: 0}, Step{kvv1.ActionRemove, 4}, 5},
		{"scale 5→3: the leader is leaving, hand over first",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(5), Members: voters(5), Leader: 4}, Step{kvv1.ActionTransfer, 4}, 5},
		{"scale 5→3: 4 removed, now 3",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(5), Members: voters(4), Leader: 0}, Step{kvv1.ActionRemove, 3}, 4},
		{"scale 5→3 done: the StatefulSet may shrink",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(5), Members: voters(3), Leader: 0}, Step{}, 3},
		{"autoscaled replica joins and stays a non-voter",
			Observed{Voters: 3, Pods: 4, Bootstrapped: true, Running: ords(4), Members: append(voters(3), Member{3, false, true, true}), Leader: 0}, Step{}, 4},
		{"autoscaler added a pod", Observed{Voters: 3, Pods: 4, Bootstrapped: true, Running: ords(4), Members: voters(3), Leader: 0}, Step{kvv1.ActionAddNonVoter, 3}, 4},
		{"autoscaler removed a pod: its member goes",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: append(voters(3), Member{3, false, false, false}), Leader: 0}, Step{kvv1.ActionRemove, 3}, 4},
		{"fewer voters, pods kept as replicas: demote",
			Observed{Voters: 3, Pods: 5, Bootstrapped: true, Running: ords(5), Members: voters(5), Leader: 0}, Step{kvv1.ActionDemote, 4}, 5},
		{"no member answers: change nothing", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: nil, Members: nil, Leader: -1}, Step{}, 3},
		{"crash after AddNonVoter, before promote: plan resumes with promote",
			Observed{Voters: 2, Pods: 2, Bootstrapped: true, Running: ords(2), Members: []Member{{0, true, true, true}, {1, false, true, true}}, Leader: 0}, Step{kvv1.ActionPromote, 1}, 2},
		{"crash after Remove, before shrink: plan lets the StatefulSet shrink",
			Observed{Voters: 1, Pods: 1, Bootstrapped: true, Running: ords(2), Members: voters(1), Leader: 0}, Step{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.o)
			got, pods := d.Step, d.Keep
			if got != tc.want || pods != tc.wantPods {
				t.Fatalf("Plan = %+v, %d pods; want %+v, %d", got, pods, tc.want, tc.wantPods)
			}
		})
	}
}
