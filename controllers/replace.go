package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
)

// replaceUnschedulable gives a member whose pod could not be scheduled
// for spec.replaceAfter a new volume: its claim and then its pod are
// deleted, and the StatefulSet makes both again. The new volume has a new
// incarnation, so the lost-volume steps of the membership plan remove the
// member and add it back as a non-voter, promoted once caught up.
//
// Why this is safe: the member's data is on a node that is gone, so the
// claim holds nothing the store can reach; the member, which cannot run,
// counts for nothing in the quorum already. Deleting it changes no Raft
// configuration: that is left to the plan, one step at a time and only
// while a healthy majority remains. It acts only on the leader's own view
// (st.plan.Leader), only when the other voters hold a healthy majority,
// only when no membership step is under way, and on one member at a time
// (status.replacing, cleared once that pod runs again).
func (r *KeyValueStoreReconciler) replaceUnschedulable(ctx context.Context, st *state) result {
	kvs := st.kvs
	if kvs.Spec.ReplaceAfter == nil || st.live == nil {
		return done()
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs))); err != nil {
		return fail(err)
	}
	if name := kvs.Status.Replacing; name != "" {
		for _, p := range pods.Items {
			if p.Name == name && p.Status.Phase == corev1.PodRunning {
				kvs.Status.Replacing = ""
			}
		}
		if kvs.Status.Replacing != "" {
			return done()
		}
	}
	if st.step.Action != "" || st.plan.Leader < 0 {
		return done()
	}
	now := r.Now()
	for i := range pods.Items {
		p := &pods.Items[i]
		o, ok := kvv1.PodOrdinal(kvs, p.Name)
		if !ok || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodPending {
			continue
		}
		since, stuck := unschedulableSince(p)
		if !stuck || now.Sub(since) < kvs.Spec.ReplaceAfter.Duration {
			continue
		}
		if why := quorumWithout(st.plan.Members, o); why != "" {
			st.obs.blocked = fmt.Sprintf("pod %s has not been schedulable for %s, but its volume is not replaced: %s", p.Name, now.Sub(since).Round(time.Second), why)
			return done()
		}
		claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: kvs.Namespace, Name: kvv1.DataClaimName(kvs, o)}}
		if err := r.Delete(ctx, claim); err != nil && !apierrors.IsNotFound(err) {
			return fail(err)
		}
		// The claim goes once no pod uses it: delete the pod too, with
		// its UID as precondition so that only the stuck one goes.
		if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fail(err)
		}
		kvs.Status.Replacing = p.Name
		r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonReplacingMember, "Replace",
			fmt.Sprintf("pod %s could not be scheduled for %s (spec.replaceAfter %s): deleted its claim %s and the pod; it comes back on a new volume and rejoins as a new member", p.Name, now.Sub(since).Round(time.Second), kvs.Spec.ReplaceAfter.Duration, claim.Name))
		return done()
	}
	return done()
}

// unschedulableSince is when the scheduler last said p cannot be placed.
func unschedulableSince(p *corev1.Pod) (time.Time, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.LastTransitionTime.Time, true
		}
	}
	return time.Time{}, false
}

// quorumWithout says why the voters other than ordinal o do not hold a
// healthy majority of the configuration; "" when they do.
func quorumWithout(members []membership.Member, o int) string {
	voters, healthy := 0, 0
	for _, m := range members {
		if !m.Voter {
			continue
		}
		voters++
		if m.Ordinal != o && m.Healthy {
			healthy++
		}
	}
	if voters == 0 {
		return "no configuration from the leader"
	}
	if healthy <= voters/2 {
		return fmt.Sprintf("only %d of %d voters are healthy without it", healthy, voters)
	}
	return ""
}
