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
	reachable       bool     // a member answered the membership API
	step            string   // the membership step made or awaited, "" when settled
	stepDone        bool     // the step was made: the next one can follow at once
	blocked         string   // why the membership change the spec asks for waits
	mismatch        string   // a pod reports another cluster ID than the store's
	quorumLost      string   // a majority of the voters lost their volumes
	waiting         string   // what the reconcile waits for, "" when nothing
	volumesRefused  string   // the volumes cannot grow to the size asked
	resizing        string   // volume claims growing, "" when none
	restoreFailed   string   // spec.restore cannot be done
	storageFull     []string // members whose volume is full, with their numbers
	err             error    // the first real error of the reconcile
}

// setStatus fills kvs.Status from obs: phase, counts, members and the
// three conditions. It is a pure function of its inputs.
func setStatus(kvs *kvv1.KeyValueStore, obs observation) {
	st := &kvs.Status
	want := kvs.Voters()
	st.Replicas, st.ReadyReplicas = obs.pods, obs.readyPods
	st.Ready = fmt.Sprintf("%d/%d", obs.readyPods, max(obs.pods, want))
	st.Voters, st.Leader, st.Members = obs.voters, obs.leader, obs.members
	if obs.clusterID != "" {
		st.ClusterID = obs.clusterID
	}
	st.Endpoint = kvv1.Endpoint(kvs)
	unhealthy := 0
	for _, m := range obs.members {
		if !m.Healthy {
			unhealthy++
		}
	}
	ready := obs.leader != "" && obs.voters >= want && obs.readyPods >= want && unhealthy == 0
	gen := kvs.Generation
	cond := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case ready:
		cond(kvv1.ConditionReady, true, kvv1.ReasonAvailable, fmt.Sprintf("%d voters, leader %s", obs.voters, obs.leader))
	case !st.Bootstrapped:
		cond(kvv1.ConditionReady, false, kvv1.ReasonCreating, orDefault(obs.waiting, "creating the cluster"))
	case obs.leader == "" && !obs.reachable:
		cond(kvv1.ConditionReady, false, kvv1.ReasonClusterUnreachable, "no member answers the membership API")
	case obs.leader == "":
		cond(kvv1.ConditionReady, false, kvv1.ReasonNoLeader, "the cluster has no leader")
	default:
		cond(kvv1.ConditionReady, false, kvv1.ReasonMembersUnhealthy, fmt.Sprintf("%d/%d pods ready, %d/%d voters, %d members unhealthy", obs.readyPods, want, obs.voters, want, unhealthy))
	}
	progressing := obs.step != "" || obs.waiting != "" || obs.resizing != ""
	switch {
	case kvs.Spec.Paused:
		cond(kvv1.ConditionProgressing, false, kvv1.ReasonPaused, "spec.paused is true: no changes are made")
	case obs.step != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonMembershipChange, obs.step)
	case obs.waiting != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonWaitingForPods, obs.waiting)
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
	case obs.volumesRefused != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonVolumeExpansionRefused, obs.volumesRefused)
	case obs.blocked != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonUnsafeMembershipChange, obs.blocked)
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
	case obs.restoreFailed != "":
		st.Phase = kvv1.PhaseDegraded
	case !st.Bootstrapped:
		st.Phase = kvv1.PhaseCreating
	case obs.err != nil || meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionDegraded):
		st.Phase = kvv1.PhaseDegraded
	case progressing:
		st.Phase = kvv1.PhaseScaling
	default:
		st.Phase = kvv1.PhaseRunning
	}
	if obs.err == nil {
		st.ObservedGeneration = gen
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
