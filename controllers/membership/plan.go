// Package membership decides and makes the Raft membership changes of a
// KeyValueStore, one at a time (DESIGN §3): bootstrap once, add each new
// pod as a non-voter, promote it once caught up, and on scale-down move
// leadership away, remove the member, and only then let the StatefulSet
// shrink. Plan is a pure function of what was observed, so that an
// operator that crashed mid-step simply plans again and repeats the step
// (every step is idempotent on the kvnodes).
package membership

import (
	"sort"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// Member is a Raft member as observed through GET /v1/cluster.
type Member struct {
	Ordinal int
	Voter   bool
	Healthy bool
	// CaughtUp: applied within the promotion lag of the leader's commit.
	CaughtUp bool
}

// Observed is everything Plan decides on.
type Observed struct {
	// Voters is spec.replicas; Pods is how many pods should exist
	// (spec.replicas, or the autoscaler's count).
	Voters, Pods int
	// Current is how many pods the StatefulSet has now (its
	// spec.replicas; 0 before it exists).
	Current int
	// Bootstrapped: status says the cluster was bootstrapped once.
	Bootstrapped bool
	// Running are the ordinals of pods whose kvnode answers.
	Running []int
	// Members is the Raft configuration (nil when no member answered).
	Members []Member
	// Leader is the ordinal of the leader, -1 when none is known.
	Leader int
}

// Step is one membership change.
type Step struct {
	Action  string // a kvv1.Action* constant, or "" for nothing to do
	Ordinal int
}

// Decision is what Plan decided.
type Decision struct {
	Step Step
	// Keep is how many pods the StatefulSet may have now: during a
	// scale-down the pods of members that are still in the configuration
	// are kept until they are removed.
	Keep int
	// Blocked says why a change the spec asks for is not made now ("" when
	// nothing waits).
	Blocked string
}

// Plan returns the next step and how many pods the StatefulSet may have
// now.
func Plan(o Observed) Decision {
	step, keep := plan(o)
	return Decision{Step: step, Keep: keep}
}

func plan(o Observed) (Step, int) {
	running := map[int]bool{}
	for _, r := range o.Running {
		running[r] = true
	}
	if !o.Bootstrapped {
		if running[0] {
			return Step{Action: kvv1.ActionBootstrap, Ordinal: 0}, o.Pods
		}
		return Step{}, o.Pods // wait for pod 0
	}
	if o.Members == nil {
		return Step{}, o.Pods // nobody answered: nothing is safe to change
	}
	members := append([]Member(nil), o.Members...)
	sort.Slice(members, func(i, j int) bool { return members[i].Ordinal < members[j].Ordinal })
	isMember := map[int]Member{}
	highest := -1
	for _, m := range members {
		isMember[m.Ordinal] = m
		highest = max(highest, m.Ordinal)
	}
	keep := max(o.Pods, highest+1)

	// 1. Scale-down: members beyond the pod count leave, highest first; the
	// leader hands over before it leaves.
	if len(members) > 0 && members[len(members)-1].Ordinal >= o.Pods {
		m := members[len(members)-1]
		if m.Ordinal == o.Leader {
			return Step{Action: kvv1.ActionTransfer, Ordinal: m.Ordinal}, keep
		}
		return Step{Action: kvv1.ActionRemove, Ordinal: m.Ordinal}, keep
	}
	// 2. New pods join as non-voters, lowest first.
	for i := 0; i < o.Pods; i++ {
		if _, ok := isMember[i]; !ok && running[i] {
			return Step{Action: kvv1.ActionAddNonVoter, Ordinal: i}, keep
		}
	}
	// 3. Members that should vote are promoted once caught up.
	for _, m := range members {
		if m.Ordinal < o.Voters && !m.Voter && m.CaughtUp {
			return Step{Action: kvv1.ActionPromote, Ordinal: m.Ordinal}, keep
		}
	}
	// 4. Voters beyond spec.replicas (fewer voters, pods kept as replicas)
	// become non-voters; the leader hands over first.
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		if m.Ordinal >= o.Voters && m.Voter {
			if m.Ordinal == o.Leader {
				return Step{Action: kvv1.ActionTransfer, Ordinal: m.Ordinal}, keep
			}
			return Step{Action: kvv1.ActionDemote, Ordinal: m.Ordinal}, keep
		}
	}
	return Step{}, keep
}
