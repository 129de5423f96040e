// Package membership decides and makes the Raft membership changes of a
// KeyValueStore, one at a time (DESIGN §3): bootstrap once, add each new
// pod as a non-voter, promote it once caught up, and on scale-down move
// leadership away, remove the member, and only then let the StatefulSet
// shrink. Plan is a pure function of what was observed, so that an
// operator that crashed mid-step simply plans again and repeats the step
// (every step is idempotent on the kvnodes).
//
// # Safety
//
// The operator never acts on a partial view (DESIGN §6). What Plan may do
// rests on three assumptions:
//
//   - The leader's configuration is authoritative. Observe reads the
//     member list from the member that reports itself as the leader, and
//     only then gives Plan a leader (Observed.Leader >= 0). Any other
//     member may lag behind a change that already committed, or not know
//     one that is still being made. A kvnode answers a membership call
//     only once the change has committed, and the next change is planned
//     on a later observation.
//   - Health is what the leader reports: a member is healthy when it
//     answered the leader's status request within a second and says it is
//     ready (it knows a leader and has caught up). A member the leader
//     cannot reach is counted as down, whatever it says to the operator.
//   - One change at a time: each reconcile makes at most one step, so each
//     step is judged against the configuration it changes.
//
// From these, Plan keeps two rules. The StatefulSet shrinks only on the
// leader's word that the pods to delete are no longer members: Keep never
// drops below the highest member's ordinal + 1, and without the leader's
// view (no leader, nobody answered, the leader did not answer) it never
// drops below the StatefulSet's current size. And a change to the voters
// is made only when, after it, the healthy voters are still a majority of
// the voters, so the new configuration can commit and serve; among the
// members that have to go, unhealthy ones go first, because removing a
// member that is down can only make that majority easier to reach.
// Otherwise Plan waits and says why (Decision.Blocked), which status
// reports as Degraded.
//
// # Bootstrap
//
// A bootstrap starts a new, empty cluster, so it must happen once per
// store. Status alone cannot say whether it happened: a store re-applied
// without status (GitOps, a restored manifest) has none, and a store
// deleted and created again also gets a new StatefulSet, while the pods'
// volumes (PVCs are retained) still hold the old cluster. The guard rests
// on these assumptions:
//
//   - Every member's volume remembers its cluster: a kvnode that holds
//     Raft state (or hears from a leader) says so in GET /v1/cluster
//     (hasState), with its cluster ID, also without a leader, when its log
//     is not applied yet (kvnode reads the ID from the log itself).
//   - The volumes that may hold the cluster belong to the pods that should
//     exist (0..Pods-1) or that run: scale-downs remove a member before
//     its pod goes, so a volume of a pod beyond them is no longer a member.
//   - The recorded ID, the StatefulSet's annotation (kvv1.AnnotationClusterID)
//     or else status.clusterID, names the store's cluster once known.
//
// From these, Plan bootstraps pod 0 only when nothing records a cluster and
// every one of those pods has answered and reported an empty volume; a pod
// that has not answered makes it wait (Decision.Waiting), as it may hold
// the cluster. A pod that reports state means a cluster exists: it is
// adopted (Decision.Bootstrapped, with the ID the pods report) and never
// bootstrapped. A pod that reports another ID than the recorded one (or,
// with none recorded, than another pod) may belong to another cluster:
// then Plan makes no change at all and keeps every pod (Decision.Mismatch),
// until a person finds out which volume is wrong. A kvnode still refuses a
// bootstrap (409) when it has state, which covers pod 0 itself.
package membership

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// Member is a Raft member as observed through GET /v1/cluster.
type Member struct {
	Ordinal int
	Voter   bool
	// Healthy: the leader reached the member and it is ready.
	Healthy bool
	// CaughtUp: applied within the promotion lag of the leader's commit.
	CaughtUp bool
	// Lost: a voter whose kvnode reports a volume not admitted to vote (a
	// new incarnation): its volume was lost, and it refuses to vote until
	// it has been removed, added again and promoted. It is not Healthy.
	Lost bool
	// Misaddressed: the configuration records another peer address than
	// the pod's stable DNS name (an IP recorded by an older kvnode): once
	// the pod is recreated with a new IP, nobody could reach it there.
	Misaddressed bool
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
	// Members is the Raft configuration as the leader reports it.
	Members []Member
	// Leader is the ordinal of the leader that reported Members; -1 when
	// the configuration did not come from the leader (no leader, nobody
	// answered), and then Plan trusts no member list.
	Leader int
	// ClusterID is the ID recorded for the store (the StatefulSet's
	// annotation, else status); "" when none was recorded.
	ClusterID string
	// Reports are what the pods that answered GET /v1/cluster said about
	// themselves; a pod without a report did not answer.
	Reports []Report
	// QuorumLost says why the quorum is lost for good (QuorumLoss); ""
	// when it is not.
	QuorumLost string
	// RecoverFrom is the ordinal a person named to recover a lost quorum
	// from (kvv1.AnnotationRecoverFrom); nil when none.
	RecoverFrom *int
}

// Report is what one pod says about itself through GET /v1/cluster.
type Report struct {
	Ordinal int
	// ClusterID names the cluster whose log the pod holds ("" when none).
	ClusterID string
	// HasState: the pod's volume holds Raft state, or it hears from a
	// leader; it belongs to a cluster, named or not yet.
	HasState bool
	// NewVolume: the pod reports a volume that is not admitted to vote
	// (it lost its volume and has not been re-admitted).
	NewVolume bool
	// LastIndex and Term: the pod's last log index and current term.
	LastIndex, Term uint64
}

// Mismatch is a pod that reports another cluster than expected.
type Mismatch struct {
	Ordinal  int
	Reported string
	// Expected is the recorded ID, or when none is recorded, the one
	// reported by pod ExpectedFrom (-1: the recorded one).
	Expected     string
	ExpectedFrom int
}

func (m Mismatch) String() string {
	if m.ExpectedFrom < 0 {
		return fmt.Sprintf("pod %d reports cluster ID %q, but this store's cluster is %q", m.Ordinal, m.Reported, m.Expected)
	}
	return fmt.Sprintf("pod %d reports cluster ID %q, but pod %d reports %q", m.Ordinal, m.Reported, m.ExpectedFrom, m.Expected)
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
	// Waiting says what the bootstrap waits for when that is no fault (pods
	// still starting).
	Waiting string
	// Bootstrapped: a cluster exists, because status says so or a pod
	// holds one; status.bootstrapped records it and no bootstrap follows.
	Bootstrapped bool
	// ClusterID is the cluster's ID: the recorded one, or else the one the
	// pods report (to adopt and record); "" while none is known.
	ClusterID string
	// Mismatch is set when a pod reports another cluster; then no change
	// is made and Keep holds every pod.
	Mismatch *Mismatch
}

// Plan returns the next step and how many pods the StatefulSet may have
// now.
func Plan(o Observed) Decision {
	reports := append([]Report(nil), o.Reports...)
	sort.Slice(reports, func(i, j int) bool { return reports[i].Ordinal < reports[j].Ordinal })
	// Without the leader's configuration nothing says which pods hold
	// members, so none may go.
	hold := max(o.Current, o.Pods)
	id, mismatch := identify(o.ClusterID, reports)
	if mismatch != nil {
		return Decision{Keep: hold, Bootstrapped: o.Bootstrapped, ClusterID: o.ClusterID, Mismatch: mismatch,
			Blocked: mismatch.String() + ": no membership change is made while a pod may belong to another cluster"}
	}
	o.Bootstrapped = o.Bootstrapped || id != ""
	for _, r := range reports {
		o.Bootstrapped = o.Bootstrapped || r.HasState
	}
	// A lost quorum changes nothing by itself: only a person may give up
	// the writes that only the lost members held, by naming the survivor.
	if o.QuorumLost != "" {
		d := Decision{Keep: hold, Bootstrapped: o.Bootstrapped, ClusterID: id}
		if o.RecoverFrom != nil {
			d.Step = Step{Action: kvv1.ActionRecover, Ordinal: *o.RecoverFrom}
		}
		return d
	}
	d := plan(o, reports, hold)
	d.Bootstrapped, d.ClusterID = o.Bootstrapped, id
	return d
}

// identify returns the cluster's ID, the recorded one or else the one the
// pods report, and the first pod that reports another.
func identify(recorded string, reports []Report) (string, *Mismatch) {
	id, from := recorded, -1
	for _, r := range reports {
		switch {
		case r.ClusterID == "" || r.ClusterID == id:
		case id == "":
			id, from = r.ClusterID, r.Ordinal
		default:
			return recorded, &Mismatch{Ordinal: r.Ordinal, Reported: r.ClusterID, Expected: id, ExpectedFrom: from}
		}
	}
	return id, nil
}

// bootstrapWaits says why pod 0 may not be bootstrapped yet: a pod that
// should exist, or that runs, has not said that its volume is empty. Only
// the pods' own word rules out a cluster that lost its quorum and its
// record (status and StatefulSet re-created), since its volumes outlive both.
func bootstrapWaits(o Observed, reports []Report) string {
	answered := map[int]bool{}
	for _, r := range reports {
		answered[r.Ordinal] = true
	}
	var silent []string
	seen := map[int]bool{}
	for _, i := range append(ords(o.Pods), o.Running...) {
		if !answered[i] && !seen[i] {
			silent = append(silent, strconv.Itoa(i))
		}
		seen[i] = true
	}
	if len(silent) == 0 {
		return ""
	}
	return fmt.Sprintf("the bootstrap of pod 0 waits until pods %s answer GET %s: a pod not heard from may hold an existing cluster", strings.Join(silent, ", "), clusterapi.PathCluster)
}

func ords(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}

// plan decides the membership step once the cluster's identity is settled.
func plan(o Observed, reports []Report, hold int) Decision {
	running := map[int]bool{}
	for _, r := range o.Running {
		running[r] = true
	}
	if !o.Bootstrapped {
		if !running[0] {
			return Decision{Keep: hold} // wait for pod 0
		}
		if why := bootstrapWaits(o, reports); why != "" {
			return Decision{Keep: hold, Waiting: why}
		}
		return Decision{Step: Step{Action: kvv1.ActionBootstrap, Ordinal: 0}, Keep: hold}
	}
	if o.Leader < 0 || len(o.Members) == 0 {
		d := Decision{Keep: hold}
		if o.Current > o.Pods {
			d.Blocked = fmt.Sprintf("the scale-down to %d pods waits for a leader: only the leader's configuration says which pods are no longer members", o.Pods)
		}
		return d
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

	// 1. A member recorded under another address than its pod's DNS name
	// (an IP, by an older kvnode) that does not answer there gets its name:
	// the pod's IP changed when it was recreated. It changes no votes, and
	// it may be what brings a majority back, so it comes first.
	for _, m := range members {
		if m.Misaddressed && !m.Healthy {
			return Decision{Step: Step{Action: kvv1.ActionUpdateAddress, Ordinal: m.Ordinal}, Keep: keep}
		}
	}
	// 2. Scale-down: members beyond the pod count leave; the leader hands
	// over before it leaves. A removal that must wait does not hold up
	// the re-admission of a lost volume (3), which may be what it waits for.
	var leaving []Member
	for _, m := range members {
		if m.Ordinal >= o.Pods {
			leaving = append(leaving, m)
		}
	}
	blocked := ""
	if len(leaving) > 0 {
		d := leave(o, members, leaving, kvv1.ActionRemove, keep)
		if d.Step.Action != "" {
			return d
		}
		blocked = d.Blocked
	}
	// 3. A voter that lost its volume cannot vote until it is admitted
	// again. It leaves, to join again as a non-voter (4) and be promoted
	// (5), which admits its new volume, while the other voters keep a
	// healthy majority. When they do not, removing it could leave a
	// configuration that cannot commit; then one that has caught up is
	// admitted where it is (the leader writes its admission to the log,
	// so once the member has applied it, it holds every committed write),
	// and else the store is Degraded until it has caught up.
	var lost []Member
	for _, m := range members {
		if m.Voter && m.Lost {
			lost = append(lost, m)
		}
	}
	if len(lost) > 0 {
		d := leave(o, members, lost, kvv1.ActionRemove, keep)
		if d.Step.Action != "" {
			return d
		}
		for _, m := range lost {
			if m.CaughtUp {
				return Decision{Step: Step{Action: kvv1.ActionAdmit, Ordinal: m.Ordinal}, Keep: keep}
			}
		}
		why := fmt.Sprintf("member %d lost its volume and cannot vote until it has caught up: %s", lost[0].Ordinal, d.Blocked)
		if blocked != "" {
			why = blocked + "; " + why
		}
		return Decision{Keep: keep, Blocked: why}
	}
	if blocked != "" {
		return Decision{Keep: keep, Blocked: blocked}
	}
	// 4. New pods join as non-voters, lowest first.
	for i := 0; i < o.Pods; i++ {
		if _, ok := isMember[i]; !ok && running[i] {
			return Decision{Step: Step{Action: kvv1.ActionAddNonVoter, Ordinal: i}, Keep: keep}
		}
	}
	// 5. Members that should vote are promoted once caught up.
	for _, m := range members {
		if m.Ordinal < o.Voters && !m.Voter && m.CaughtUp {
			promoted := m
			promoted.Voter = true
			if why := unsafe(members, m, &promoted); why != "" {
				return Decision{Keep: keep, Blocked: fmt.Sprintf("%s of member %d waits: %s", kvv1.ActionPromote, m.Ordinal, why)}
			}
			return Decision{Step: Step{Action: kvv1.ActionPromote, Ordinal: m.Ordinal}, Keep: keep}
		}
	}
	// 6. Voters beyond spec.replicas (fewer voters, pods kept as replicas)
	// become non-voters; the leader hands over first.
	var demoted []Member
	for _, m := range members {
		if m.Ordinal >= o.Voters && m.Voter {
			demoted = append(demoted, m)
		}
	}
	if len(demoted) > 0 {
		return leave(o, members, demoted, kvv1.ActionDemote, keep)
	}
	return Decision{Keep: keep}
}

// leave plans the next of candidates to lose its vote (action is Remove
// or Demote): unhealthy members first, then the highest ordinal, and only
// one whose departure leaves a healthy majority of voters.
func leave(o Observed, members, candidates []Member, action string, keep int) Decision {
	sort.SliceStable(candidates, func(i, j int) bool {
		a, b := candidates[i], candidates[j]
		if a.Healthy != b.Healthy {
			return !a.Healthy
		}
		return a.Ordinal > b.Ordinal
	})
	blocked := ""
	for _, m := range candidates {
		var after *Member // removed
		if action == kvv1.ActionDemote {
			after = &Member{Ordinal: m.Ordinal, Healthy: m.Healthy, CaughtUp: m.CaughtUp}
		}
		if why := unsafe(members, m, after); why != "" {
			if blocked == "" {
				blocked = fmt.Sprintf("%s of member %d waits: %s", action, m.Ordinal, why)
			}
			continue
		}
		if m.Ordinal == o.Leader {
			return Decision{Step: Step{Action: kvv1.ActionTransfer, Ordinal: m.Ordinal}, Keep: keep}
		}
		return Decision{Step: Step{Action: action, Ordinal: m.Ordinal}, Keep: keep}
	}
	return Decision{Keep: keep, Blocked: blocked}
}

// unsafe says why the configuration with m replaced by after (nil: m
// removed) could not commit with the members that are healthy now; ""
// when the healthy voters would still be a majority, or when the voters
// do not change (a non-voter comes or goes).
func unsafe(members []Member, m Member, after *Member) string {
	if !m.Voter && (after == nil || !after.Voter) {
		return ""
	}
	voters, healthy := 0, 0
	for _, x := range members {
		if x.Ordinal == m.Ordinal {
			if after == nil {
				continue
			}
			x = *after
		}
		if x.Voter {
			voters++
			if x.Healthy {
				healthy++
			}
		}
	}
	if majority := voters/2 + 1; healthy < majority {
		return fmt.Sprintf("it would leave %d healthy of %d voters, and a majority is %d", healthy, voters, majority)
	}
	return ""
}
