package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
)

// +kubebuilder:rbac:groups="",resources=persistentvolumes;nodes,verbs=get
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;delete

// replaceUnschedulable gives a member whose pod could not be scheduled
// for spec.replaceAfter, and whose volume is a local one on a node that
// no longer exists, a new volume: its claim and then its pod are
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
		// A pod the store no longer has (scaled down meanwhile) is not
		// waited for.
		if o, ok := kvv1.PodOrdinal(kvs, name); ok && o >= st.keep && kvs.Status.Replacing != "" && !podExists(pods.Items, name) {
			kvs.Status.Replacing = ""
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
		claim := &corev1.PersistentVolumeClaim{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.DataClaimName(kvs, o)}, claim); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fail(err)
		}
		// Only a volume tied to a node that is gone: a pod unschedulable
		// for want of CPU, or on a cordoned node, keeps its data.
		if gone, err := r.volumeNodeGone(ctx, claim); apierrors.IsForbidden(err) {
			// A namespace-scoped install may not read Nodes and
			// PersistentVolumes: say so rather than fail every reconcile.
			st.obs.blocked = fmt.Sprintf("pod %s has not been schedulable for %s, but the operator may not read its volume or node to tell whether the node is gone (%v)", p.Name, now.Sub(since).Round(time.Second), err)
			return done()
		} else if err != nil {
			return fail(err)
		} else if !gone {
			continue
		}
		if why := quorumWithout(st.plan.Members, o); why != "" {
			st.obs.blocked = fmt.Sprintf("pod %s has not been schedulable for %s, but its volume is not replaced: %s", p.Name, now.Sub(since).Round(time.Second), why)
			return done()
		}
		// Recorded first: an operator that dies after the deletions must
		// not, on a stale view, delete the claim the StatefulSet makes anew.
		before := kvs.DeepCopy()
		kvs.Status.Replacing = p.Name
		if err := r.Status().Patch(ctx, kvs, client.MergeFrom(before)); err != nil {
			return fail(err)
		}
		if err := r.Delete(ctx, claim, client.Preconditions{UID: &claim.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fail(err)
		}
		// The claim goes once no pod uses it: delete the pod too, with
		// its UID as precondition so that only the stuck one goes.
		if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fail(err)
		}
		r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonReplacingMember, "Replace",
			fmt.Sprintf("pod %s could not be scheduled for %s (spec.replaceAfter %s): deleted its claim %s and the pod; it comes back on a new volume and rejoins as a new member", p.Name, now.Sub(since).Round(time.Second), kvs.Spec.ReplaceAfter.Duration, claim.Name))
		return done()
	}
	return done()
}

// volumeNodeGone says whether claim is bound to a volume that only one
// set of nodes can reach (a local volume's node affinity) and none of
// them exists any more. Volumes and Nodes are read around the cache: they
// are needed only for a pod stuck for spec.replaceAfter, and a cache of
// every Node and volume would cost memory (and cluster-wide RBAC) always.
func (r *KeyValueStoreReconciler) volumeNodeGone(ctx context.Context, claim *corev1.PersistentVolumeClaim) (bool, error) {
	if claim.Spec.VolumeName == "" {
		return false, nil
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	pv := &corev1.PersistentVolume{}
	if err := reader.Get(ctx, types.NamespacedName{Name: claim.Spec.VolumeName}, pv); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	na := pv.Spec.NodeAffinity
	if na == nil || na.Required == nil {
		return false, nil // network storage: it follows the pod
	}
	var nodes []string
	for _, term := range na.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == corev1.LabelHostname && e.Operator == corev1.NodeSelectorOpIn {
				nodes = append(nodes, e.Values...)
			}
		}
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn {
				nodes = append(nodes, f.Values...)
			}
		}
	}
	if len(nodes) == 0 {
		return false, nil // tied to a zone or a label, not one node
	}
	for _, n := range nodes {
		err := reader.Get(ctx, types.NamespacedName{Name: n}, &corev1.Node{})
		if err == nil {
			return false, nil
		}
		if !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
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

func podExists(pods []corev1.Pod, name string) bool {
	for _, p := range pods {
		if p.Name == name {
			return true
		}
	}
	return false
}
