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

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name     string
		o        Observed
		want     Step
		wantPods int
	}{
		{"new cluster waits for pod 0", Observed{Voters: 3, Pods: 3, Running: []int{1, 2}, Leader: -1}, Step{}, 3},
		{"new cluster bootstraps pod 0 once every pod said it is empty",
			Observed{Voters: 3, Pods: 3, Running: ords(3), Reports: empty(3), Leader: -1}, Step{kvv1.ActionBootstrap, 0}, 3},
		{"bootstrapped: never again, even if nothing answers", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: []int{0}, Leader: -1}, Step{}, 3},
		{"add pod 1 as non-voter", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: voters(1), Leader: 0}, Step{kvv1.ActionAddNonVoter, 1}, 3},
		{"pod 1 not running yet: wait", Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: []int{0}, Members: voters(1), Leader: 0}, Step{}, 3},
		{"promote a caught-up non-voter",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 1, Voter: false, Healthy: true, CaughtUp: true}}, Leader: 0}, Step{kvv1.ActionAddNonVoter, 2}, 3},
		{"promote after every pod joined",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 1, Voter: false, Healthy: true, CaughtUp: true}, {Ordinal: 2, Voter: false, Healthy: true, CaughtUp: false}}, Leader: 0}, Step{kvv1.ActionPromote, 1}, 3},
		{"do not promote one that lags",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 1, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 2, Voter: false, Healthy: true, CaughtUp: false}}, Leader: 0}, Step{}, 3},
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
			Observed{Voters: 3, Pods: 4, Bootstrapped: true, Running: ords(4), Members: append(voters(3), Member{Ordinal: 3, Voter: false, Healthy: true, CaughtUp: true}), Leader: 0}, Step{}, 4},
		{"autoscaler added a pod", Observed{Voters: 3, Pods: 4, Bootstrapped: true, Running: ords(4), Members: voters(3), Leader: 0}, Step{kvv1.ActionAddNonVoter, 3}, 4},
		{"autoscaler removed a pod: its member goes",
			Observed{Voters: 3, Pods: 3, Bootstrapped: true, Running: ords(3), Members: append(voters(3), Member{Ordinal: 3, Voter: false, Healthy: false, CaughtUp: false}), Leader: 0}, Step{kvv1.ActionRemove, 3}, 4},
		{"fewer voters, pods kept as replicas: demote",
			Observed{Voters: 3, Pods: 5, Bootstrapped: true, Running: ords(5), Members: voters(5), Leader: 0}, Step{kvv1.ActionDemote, 4}, 5},
		{"crash after AddNonVoter, before promote: plan resumes with promote",
			Observed{Voters: 2, Pods: 2, Bootstrapped: true, Running: ords(2), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 1, Voter: false, Healthy: true, CaughtUp: true}}, Leader: 0}, Step{kvv1.ActionPromote, 1}, 2},
		{"crash after Remove, before shrink: plan lets the StatefulSet shrink",
			Observed{Voters: 1, Pods: 1, Bootstrapped: true, Running: ords(2), Members: voters(1), Leader: 0}, Step{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.o)
			got, pods := d.Step, d.Keep
			if got != tc.want || pods != tc.wantPods || d.Blocked != "" {
				t.Fatalf("Plan = %+v, %d pods, blocked %q; want %+v, %d", got, pods, d.Blocked, tc.want, tc.wantPods)
			}
		})
	}
}

// down marks the members with the given ordinals unhealthy.
func down(m []Member, ords ...int) []Member {
	for _, o := range ords {
		m[o].Healthy = false
	}
	return m
}

// lose marks the members with the given ordinals as having lost their
// volume, as Observe does: lost and unhealthy.
func lose(m []Member, ords ...int) []Member {
	for _, o := range ords {
		m[o].Lost, m[o].Healthy = true, false
	}
	return m
}

func lag(m []Member, ords ...int) []Member {
	for _, o := range ords {
		m[o].CaughtUp = false
	}
	return m
}

func misaddress(m []Member, ords ...int) []Member {
	for _, o := range ords {
		m[o].Misaddressed = true
	}
	return m
}

// The plan never acts on a partial view: the StatefulSet shrinks only on
// the leader's word that the pods to delete are out of the configuration,
// and no voter leaves unless a healthy majority of the voters remains.
func TestPlanSafety(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Observed
		want    Step
		keep    int
		blocked bool
	}{
		// No leader's view.
		{name: "no member answers during 5→3: keep every pod",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Leader: -1},
			keep: 5, blocked: true},
		{name: "no member answers, nothing to shrink: wait quietly",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Leader: -1},
			keep: 3},
		{name: "no leader during 5→3: a member's configuration is not enough to remove",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: ords(5), Members: voters(5), Leader: -1},
			keep: 5, blocked: true},
		{name: "no leader, a lagging member says 3 and 4 are gone: keep their pods",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: ords(5), Members: voters(3), Leader: -1},
			keep: 5, blocked: true},
		{name: "no leader while scaling up: add nothing",
			o:    Observed{Voters: 5, Pods: 5, Current: 5, Bootstrapped: true, Running: ords(5), Members: voters(3), Leader: -1},
			keep: 5},

		// One unhealthy member.
		{name: "3→1 with member 1 down: remove 1 first",
			o:    Observed{Voters: 1, Pods: 1, Current: 3, Bootstrapped: true, Running: []int{0, 2}, Members: down(voters(3), 1), Leader: 0},
			want: Step{kvv1.ActionRemove, 1}, keep: 3},
		{name: "3→1, member 1 removed: now 2",
			o:    Observed{Voters: 1, Pods: 1, Current: 3, Bootstrapped: true, Running: []int{0, 2}, Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 2, Voter: true, Healthy: true, CaughtUp: true}}, Leader: 0},
			want: Step{kvv1.ActionRemove, 2}, keep: 3},
		{name: "3 voters, demote to 2 with member 1 down: demote nothing that breaks the majority",
			o:    Observed{Voters: 2, Pods: 3, Current: 3, Bootstrapped: true, Running: []int{0, 2}, Members: down(voters(3), 1), Leader: 0},
			keep: 3, blocked: true},
		{name: "5 voters to 3, pods kept, member 3 down: demote 3 first",
			o:    Observed{Voters: 3, Pods: 5, Current: 5, Bootstrapped: true, Running: []int{0, 1, 2, 4}, Members: down(voters(5), 3), Leader: 0},
			want: Step{kvv1.ActionDemote, 3}, keep: 5},
		{name: "1→2: promoting a member not ready yet would need it for every commit, wait",
			o:    Observed{Voters: 2, Pods: 2, Current: 2, Bootstrapped: true, Running: ords(2), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 1, Voter: false, Healthy: false, CaughtUp: true}}, Leader: 0},
			keep: 2, blocked: true},
		{name: "a non-voter goes even when voters are down",
			o:    Observed{Voters: 3, Pods: 3, Current: 4, Bootstrapped: true, Running: []int{0, 3}, Members: append(down(voters(3), 1, 2), Member{Ordinal: 3, Voter: false, Healthy: true, CaughtUp: true}), Leader: 0},
			want: Step{kvv1.ActionRemove, 3}, keep: 4},

		// Two of five down.
		{name: "5→3 with 1 and 2 down: removing 4 leaves 2 healthy of 4, wait",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: []int{0, 3, 4}, Members: down(voters(5), 1, 2), Leader: 0},
			keep: 5, blocked: true},
		{name: "5→3 with 1 and 2 down and 4 leading: no hand-over for a removal that must wait",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: []int{0, 3, 4}, Members: down(voters(5), 1, 2), Leader: 4},
			keep: 5, blocked: true},
		{name: "5→3 with 2 and 3 down: remove the unhealthy 3 before 4",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: []int{0, 1, 4}, Members: down(voters(5), 2, 3), Leader: 0},
			want: Step{kvv1.ActionRemove, 3}, keep: 5},
		{name: "5→3 with 3 and 4 down: remove them",
			o:    Observed{Voters: 3, Pods: 3, Current: 5, Bootstrapped: true, Running: ords(3), Members: down(voters(5), 3, 4), Leader: 0},
			want: Step{kvv1.ActionRemove, 4}, keep: 5},
		// Lost volumes: out, in again as a non-voter, then promoted.
		{name: "a voter lost its volume: remove it",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Members: lose(voters(3), 1), Leader: 0},
			want: Step{kvv1.ActionRemove, 1}, keep: 3},
		{name: "a voter lost its volume: removed, it is added again as a non-voter",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Members: []Member{{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true}, {Ordinal: 2, Voter: true, Healthy: true, CaughtUp: true}}, Leader: 0},
			want: Step{kvv1.ActionAddNonVoter, 1}, keep: 3},
		{name: "a voter lost its volume while another is down and has not caught up: removing it would leave 1 healthy of 2, Degraded",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: []int{0, 1}, Members: lag(down(lose(voters(3), 1), 2), 1), Leader: 0},
			keep: 3, blocked: true},
		{name: "a voter lost its volume while another is down, and has caught up: admit it where it is",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: []int{0, 1}, Members: down(lose(voters(3), 1), 2), Leader: 0},
			want: Step{kvv1.ActionAdmit, 1}, keep: 3},
		{name: "two of three lost their volumes: no removal is safe, admit a caught-up one where it is",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Members: lag(lose(voters(3), 1, 2), 1), Leader: 0},
			want: Step{kvv1.ActionAdmit, 2}, keep: 3},
		{name: "3→2 with pod 1 lost: the removal of 2 waits, the lost 1 goes first",
			o:    Observed{Voters: 2, Pods: 2, Current: 3, Bootstrapped: true, Running: ords(3), Members: lose(voters(3), 1), Leader: 0},
			want: Step{kvv1.ActionRemove, 1}, keep: 3},
		{name: "5 voters, two lost volumes: remove one at a time",
			o:    Observed{Voters: 5, Pods: 5, Current: 5, Bootstrapped: true, Running: ords(5), Members: lose(voters(5), 1, 3), Leader: 0},
			want: Step{kvv1.ActionRemove, 3}, keep: 5},
		{name: "a member recorded under an IP it no longer has gets its DNS name",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Members: down(misaddress(voters(3), 0), 0), Leader: 1},
			want: Step{kvv1.ActionUpdateAddress, 0}, keep: 3},
		{name: "a member recorded under its IP that still answers there: nothing to do yet",
			o:    Observed{Voters: 3, Pods: 3, Current: 3, Bootstrapped: true, Running: ords(3), Members: misaddress(voters(3), 0), Leader: 1},
			keep: 3},
		{name: "5 voters to 3, pods kept, 0 and 1 down: demoting would leave 2 healthy of 4, wait",
			o:    Observed{Voters: 3, Pods: 5, Current: 5, Bootstrapped: true, Running: []int{2, 3, 4}, Members: down(voters(5), 0, 1), Leader: 2},
			keep: 5, blocked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.o)
			if d.Step != tc.want || d.Keep != tc.keep || (d.Blocked != "") != tc.blocked {
				t.Fatalf("Plan = %+v, keep %d, blocked %q; want %+v, keep %d, blocked %v", d.Step, d.Keep, d.Blocked, tc.want, tc.keep, tc.blocked)
			}
		})
	}
}
