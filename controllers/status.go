package controllers

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// observation is what one reconcile saw, from which status is computed.
type observation struct {
	pods, readyPods int32
	voters          int32
	leader          string
	members         []kvv1.MemberStatus
	clusterID       string
	reachable       bool            // a member answered the membership API
	step            string          // the membership step made or awaited, "" when settled
	stepDone        bool            // the step was made: the next one can follow at once
	stepFailed      string          // the step was tried and failed: the step and the error
	blocked         string          // why the membership change the spec asks for waits
	mismatch        string          // a pod reports another cluster ID than the store's
	quorumLost      string          // a majority of the voters lost their volumes
	waiting         string          // what the reconcile waits for, "" when nothing
	volumesRefused  string          // the volumes cannot grow to the size asked
	resizing        string          // volume claims growing, "" when none
	invalid         string          // a spec the operator refuses (statefulset.Refuse)
	upgrade         string          // a rollout in progress ("updated 1/3: image a → b"), "" when none
	restarting      string          // the member the rollout restarted, expected down until it is back
	upgradeStopped  string          // the restarted member did not come back in time
	restoreFailed   string          // spec.restore cannot be done
	storageFull     []string        // members whose volume is full, with their numbers
	deployment      *deploymentView // with the log in PostgreSQL, the Deployment
	err             error           // the first real error of the reconcile
}

// setStatus fills kvs.Status from obs: phase, counts, members and the
// conditions. It is a pure function of its inputs, kvs.Status included:
// the members it recorded before say which members are joining.
//
// Degraded means something is wrong (a member that was healthy is not, no
// leader, a failed step, a change that waits for safety); a member on its
// way in (added or promoted, not yet healthy) or a pod not yet counted
// ready while every member is healthy is a planned change: Progressing,
// phase Scaling. A store whose log is in PostgreSQL has none of this:
// setPostgresStatus.
func setStatus(kvs *kvv1.KeyValueStore, obs observation) {
	if kvs.PostgresLog() {
		setPostgresStatus(kvs, obs)
		return
	}
	st := &kvs.Status
	want := kvs.Voters()
	st.Replicas, st.ReadyReplicas = obs.pods, obs.readyPods
	st.Ready = fmt.Sprintf("%d/%d", obs.readyPods, max(obs.pods, want))
	now := obs.members
	if !obs.reachable && st.Bootstrapped {
		// Nobody answered: the members as last seen, none healthy. Dropping
		// them would forget which were joining, and every member would be
		// new, so joining, when they answer again.
		now = nil
		for _, m := range st.Members {
			m.Healthy = false
			now = append(now, m)
		}
	}
	st.Voters, st.Leader, st.Members = obs.voters, obs.leader, joining(st.Members, now)
	if obs.clusterID != "" {
		st.ClusterID = obs.clusterID
	}
	st.Endpoint = kvv1.Endpoint(kvs)
	var unhealthy, arriving []string
	for _, m := range st.Members {
		switch {
		case m.Healthy:
		case m.Joining, m.Name == obs.restarting && obs.upgradeStopped == "":
			// Restarted by the rollout: down as planned, until it is late.
			arriving = append(arriving, m.Name)
		default:
			unhealthy = append(unhealthy, m.Name)
		}
	}
	ready := obs.leader != "" && obs.voters >= want && obs.readyPods >= want && len(unhealthy)+len(arriving) == 0
	// What is missing is on its way: members joining, voters still to be
	// promoted, pods the kubelet has not found ready yet.
	catchingUp := st.Bootstrapped && !ready && obs.leader != "" && len(unhealthy) == 0
	cond := conditions(kvs)
	switch {
	case ready:
		cond(kvv1.ConditionReady, true, kvv1.ReasonAvailable, fmt.Sprintf("%d voters, leader %s", obs.voters, obs.leader))
	case !st.Bootstrapped:
		cond(kvv1.ConditionReady, false, kvv1.ReasonCreating, orDefault(obs.waiting, "creating the cluster"))
	case obs.leader == "" && !obs.reachable:
		cond(kvv1.ConditionReady, false, kvv1.ReasonClusterUnreachable, "no member answers the membership API")
	case obs.leader == "":
		cond(kvv1.ConditionReady, false, kvv1.ReasonNoLeader, "the cluster has no leader")
	case catchingUp:
		cond(kvv1.ConditionReady, false, kvv1.ReasonScaling, members(obs, want, nil, arriving))
	default:
		cond(kvv1.ConditionReady, false, kvv1.ReasonMembersUnhealthy, members(obs, want, unhealthy, arriving))
	}
	progressing := obs.step != "" || obs.waiting != "" || catchingUp || obs.resizing != "" || obs.upgrade != ""
	switch {
	case kvs.Spec.Paused:
		cond(kvv1.ConditionProgressing, false, kvv1.ReasonPaused, "spec.paused is true: no changes are made")
	case obs.stepFailed != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonMembershipStepFailed, obs.stepFailed+"; it is tried again")
	case obs.step != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonMembershipChange, obs.step)
	case obs.waiting != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonWaitingForPods, obs.waiting)
	case catchingUp:
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonScaling, "waiting for the members to catch up: "+members(obs, want, nil, arriving))
	case obs.upgrade != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonUpgrading, obs.upgrade)
	case obs.resizing != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonResizingVolumes, obs.resizing)
	default:
		cond(kvv1.ConditionProgressing, false, kvv1.ReasonStable, "the cluster is as specified")
	}
	switch {
	case obs.err != nil:
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonReconcileFailed, obs.err.Error())
	case obs.restoreFailed != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonRestoreFailed, obs.restoreFailed)
	case obs.mismatch != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonClusterIDMismatch, obs.mismatch)
	case obs.quorumLost != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonQuorumLost, obs.quorumLost)
	case obs.invalid != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonInvalidSpec, obs.invalid)
	case obs.volumesRefused != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonVolumeExpansionRefused, obs.volumesRefused)
	case obs.upgradeStopped != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonUpgradeStopped, obs.upgradeStopped)
	case obs.blocked != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonUnsafeMembershipChange, obs.blocked)
	case obs.stepFailed != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonMembershipStepFailed, obs.stepFailed)
	case st.Bootstrapped && !ready && len(unhealthy) > 0:
		// Also while a step is made: a member down that was healthy is a
		// fault whatever the operator is doing meanwhile.
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonMembersUnhealthy, fmt.Sprintf("the cluster serves with fewer healthy members than specified: %s not healthy", strings.Join(unhealthy, ", ")))
	case st.Bootstrapped && !ready && !progressing:
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonMembersUnhealthy, "the cluster serves with fewer healthy members than specified")
	default:
		cond(kvv1.ConditionDegraded, false, kvv1.ReasonHealthy, "")
	}
	if len(obs.storageFull) > 0 {
		cond(kvv1.ConditionStorageFull, true, kvv1.ReasonVolumesFull, fmt.Sprintf("writes (PUT) are refused with 507 by %s; reads and deletes are served: grow spec.storage.size or delete data", strings.Join(obs.storageFull, ", ")))
	} else if obs.reachable || meta.FindStatusCondition(st.Conditions, kvv1.ConditionStorageFull) != nil {
		cond(kvv1.ConditionStorageFull, false, kvv1.ReasonVolumesOK, "")
	}
	switch {
	case kvs.Spec.Paused:
		st.Phase = kvv1.PhasePaused
	case obs.restoreFailed != "" || obs.invalid != "":
		st.Phase = kvv1.PhaseDegraded
	case !st.Bootstrapped:
		st.Phase = kvv1.PhaseCreating
	case obs.err != nil || meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionDegraded):
		st.Phase = kvv1.PhaseDegraded
	case obs.upgrade != "":
		st.Phase = kvv1.PhaseUpgrading
	case progressing:
		st.Phase = kvv1.PhaseScaling
	default:
		st.Phase = kvv1.PhaseRunning
	}
	if obs.err == nil {
		st.ObservedGeneration = kvs.Generation
	}
}

// joining marks the members of now that are on their way in: not healthy,
// and new since before, or in another role than before (just promoted),
// or joining before. A member seen healthy in its role is not joining
// again until its role changes: from then on, down is down.
func joining(before, now []kvv1.MemberStatus) []kvv1.MemberStatus {
	prev := map[string]kvv1.MemberStatus{}
	for _, m := range before {
		prev[m.Name] = m
	}
	out := make([]kvv1.MemberStatus, len(now))
	for i, m := range now {
		p, known := prev[m.Name]
		m.Joining = !m.Healthy && (!known || p.Joining || p.Role != m.Role)
		out[i] = m
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// members says what keeps the cluster from Ready.
func members(obs observation, want int32, unhealthy, arriving []string) string {
	msg := fmt.Sprintf("%d/%d pods ready, %d/%d voters", obs.readyPods, want, obs.voters, want)
	if len(unhealthy) > 0 {
		msg += fmt.Sprintf(", %d members unhealthy (%s)", len(unhealthy), strings.Join(unhealthy, ", "))
	}
	if len(arriving) > 0 {
		msg += fmt.Sprintf(", %d joining (%s)", len(arriving), strings.Join(arriving, ", "))
	}
	return msg
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// conditions returns a setter of kvs's status conditions, observed at
// its current generation.
func conditions(kvs *kvv1.KeyValueStore) func(t string, ok bool, reason, msg string) {
	return func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&kvs.Status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: kvs.Generation})
	}
}
