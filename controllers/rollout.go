package controllers

import (
	"context"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
)

// upgradeStopsAfter is how long a member restarted on the new template
// has to be healthy again before the rollout is reported stopped. It
// covers an image pull, a restart that replays a large log, and catching
// up with the leader.
const upgradeStopsAfter = 5 * time.Minute

// rollout restarts the pods whose template is out of date, one at a time,
// in the order that costs the cluster least: non-voters first (they hold
// no vote), then followers, and the leader last, after its leadership was
// handed to another voter, so that the cluster has one election less and
// no pod is restarted while it leads. The StatefulSet's update strategy is
// OnDelete, so its controller only recreates a pod the operator deleted,
// on the new template.
//
// Each restart waits until every member is healthy and caught up on the
// leader's view: a restart then never takes a second member down, so a
// majority of the voters stays up throughout (the PodDisruptionBudget's
// rule, kept by the operator itself). A member that does not come back
// within upgradeStopsAfter stops the rollout: status says Degraded,
// reason UpgradeStopped, with a Warning event, and no other member is
// restarted; the rollout goes on by itself once the member is healthy.
func (r *KeyValueStoreReconciler) rollout(ctx context.Context, st *state) result {
	kvs, live := st.kvs, st.live
	if live == nil || live.DeletionTimestamp != nil || live.Status.UpdateRevision == "" {
		kvs.Status.Upgrade = nil
		return done()
	}
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs))); err != nil {
		return fail(err)
	}
	pods := map[int]*corev1.Pod{}
	var outdated []int
	current := ""
	for i := range list.Items {
		p := &list.Items[i]
		o, ok := kvv1.PodOrdinal(kvs, p.Name)
		if !ok {
			continue
		}
		pods[o] = p
		// Only pods the StatefulSet keeps: one above st.keep is going (a
		// scale-down, the autoscaler), and restarting it would wait for a
		// member that never comes back.
		if o >= st.keep {
			continue
		}
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] != live.Status.UpdateRevision && p.DeletionTimestamp == nil {
			outdated = append(outdated, o)
			if len(p.Spec.Containers) > 0 {
				current = p.Spec.Containers[0].Image
			}
		}
	}
	up := kvs.Status.Upgrade
	if (up == nil || up.Restarting == "") && len(outdated) > 0 && r.APIReader != nil {
		// The store read from the cache may not show the restart the last
		// reconcile recorded, and the pod it deleted may still look as it
		// was: its member down would then count as a fault. Status is read
		// from the API server while a rollout goes on.
		fresh := &kvv1.KeyValueStore{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(kvs), fresh); err == nil && fresh.UID == kvs.UID && fresh.Status.Upgrade != nil {
			up = fresh.Status.Upgrade.DeepCopy()
		}
	}
	if up == nil {
		up = &kvv1.UpgradeStatus{}
	}
	healthy := func(o int) bool {
		for _, m := range st.plan.Members {
			if m.Ordinal == o {
				return m.Healthy && m.CaughtUp
			}
		}
		return false
	}
	// The member restarted last, until it is back: as recorded, or, when
	// status read from the cache does not show the record yet, a member
	// whose pod is gone, going, or on the new revision and not back.
	restarting := -1
	if o, ok := kvv1.PodOrdinal(kvs, up.Restarting); ok && o < st.keep {
		restarting = o
	} else if len(outdated) > 0 || live.Status.CurrentRevision != live.Status.UpdateRevision {
		// Not done while the StatefulSet has not seen every pod on the
		// new revision: the last pod restarted is no longer outdated
		// once it is gone, but it is not back either.
		for _, m := range st.plan.Members {
			p := pods[m.Ordinal]
			if m.Ordinal >= st.keep {
				continue
			}
			// A pod on the new revision counts until its member is healthy
			// and caught up, not only until the kubelet finds it ready.
			if p == nil || p.DeletionTimestamp != nil || p.Labels[appsv1.ControllerRevisionHashLabelKey] == live.Status.UpdateRevision && (!podReady(p) || !healthy(m.Ordinal)) {
				restarting = m.Ordinal
				break
			}
		}
	}
	finish := func() result {
		if kvs.Status.Upgrade != nil {
			r.event(kvs, corev1.EventTypeNormal, "Upgraded", "Rollout", fmt.Sprintf("every member runs the new template (image %s)", kvs.Spec.Image))
		}
		kvs.Status.Upgrade = nil
		st.obs.upgrade = ""
		return done()
	}
	if len(outdated) == 0 && restarting < 0 {
		return finish()
	}
	up.Updated = fmt.Sprintf("%d/%d", len(pods)-len(outdated), len(pods))
	up.TargetImage = kvs.Spec.Image
	if current != "" {
		up.CurrentImage = current
	}
	kvs.Status.Upgrade = up
	st.obs.upgrade = fmt.Sprintf("updated %s", up.Updated)
	if up.CurrentImage != "" && up.CurrentImage != up.TargetImage {
		st.obs.upgrade += fmt.Sprintf(": image %s → %s", up.CurrentImage, up.TargetImage)
	}

	if restarting >= 0 {
		p := pods[restarting]
		back := p != nil && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) && healthy(restarting) && st.plan.Leader >= 0
		if !back {
			name := kvv1.PodName(kvs, restarting)
			st.obs.restarting = name
			since := time.Time{}
			if up.RestartedAt != nil {
				since = up.RestartedAt.Time
			} else if p != nil && p.DeletionTimestamp == nil {
				since = p.CreationTimestamp.Time
			}
			if !since.IsZero() && r.Now().Sub(since) > upgradeStopsAfter {
				msg := fmt.Sprintf("the rollout stopped: %s, restarted on the new template %s ago, is not healthy (%s); no other member is restarted until it is",
					name, r.Now().Sub(since).Round(time.Second), podTrouble(p))
				st.obs.upgradeStopped = msg
				if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded); c == nil || c.Reason != kvv1.ReasonUpgradeStopped {
					r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonUpgradeStopped, "Rollout", msg)
				}
			}
			return done()
		}
		up.Restarting, up.RestartedAt = "", nil
		if len(outdated) == 0 {
			return finish()
		}
	}
	// Only on a settled cluster: the leader's view, no membership step
	// pending, every pod there and every member healthy and caught up.
	if st.step.Action != "" || st.plan.Leader < 0 || len(st.plan.Members) == 0 {
		return done()
	}
	for _, m := range st.plan.Members {
		if p := pods[m.Ordinal]; p == nil || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !podReady(p) || !m.Healthy || !m.CaughtUp {
			return done()
		}
	}
	role := map[int]int{} // 0 non-voter, 1 follower, 2 leader: the order of restarts
	for _, m := range st.plan.Members {
		switch {
		case m.Ordinal == st.plan.Leader:
			role[m.Ordinal] = 2
		case m.Voter:
			role[m.Ordinal] = 1
		}
	}
	sort.Slice(outdated, func(i, j int) bool {
		a, b := outdated[i], outdated[j]
		if role[a] != role[b] {
			return role[a] < role[b]
		}
		return a > b // the highest ordinal first, as a StatefulSet rolls
	})
	next := outdated[0]
	voters := 0
	for _, m := range st.plan.Members {
		if m.Voter {
			voters++
		}
	}
	if next == st.plan.Leader && voters > 1 {
		// Hand leadership to another voter first: a leader restarted
		// would make the cluster wait an election timeout for the next.
		if err := st.mc.Execute(ctx, membership.Step{Action: kvv1.ActionTransfer, Ordinal: next}, next); err != nil {
			st.obs.stepFailed = fmt.Sprintf("%s %s before its restart: %v", kvv1.ActionTransfer, kvv1.PodName(kvs, next), err)
			return done()
		}
		r.event(kvs, corev1.EventTypeNormal, "LeadershipTransferred", kvv1.ActionTransfer, fmt.Sprintf("handed leadership away from %s before restarting it on the new template", kvv1.PodName(kvs, next)))
		st.obs.stepDone = true // the next reconcile restarts it as a follower
		return done()
	}
	p := pods[next]
	uid := p.UID
	if err := client.IgnoreNotFound(r.Delete(ctx, p, client.Preconditions{UID: &uid})); err != nil {
		return fail(fmt.Errorf("restart %s on the new template: %w", p.Name, err))
	}
	up.Restarting, up.RestartedAt = p.Name, ptr.To(metav1.NewTime(r.Now()))
	st.obs.restarting = p.Name
	note := fmt.Sprintf("restarting %s on the new template (updated %s)", p.Name, up.Updated)
	if next == st.plan.Leader {
		// One voter: there is nobody to hand leadership to, and the store
		// is unavailable until it is back, as with any restart of it.
		note += "; it is the only voter: the store is unavailable until it is back"
	}
	r.event(kvs, corev1.EventTypeNormal, "RestartMember", "Rollout", note)
	return done()
}

// podTrouble says in a few words why p is not healthy: its container's
// waiting reason, or its last termination message.
func podTrouble(p *corev1.Pod) string {
	if p == nil {
		return "its pod does not exist"
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return fmt.Sprintf("%s: %s", w.Reason, lastLineOf(w.Message))
		}
		if t := cs.LastTerminationState.Terminated; t != nil {
			return fmt.Sprintf("last exit %d: %s", t.ExitCode, lastLineOf(t.Message))
		}
	}
	return "pod " + string(p.Status.Phase) + ", not ready"
}

func lastLineOf(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			s = s[i+1:]
			break
		}
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
