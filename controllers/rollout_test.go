package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// revisionPod makes (or remakes) pod i of store on revision rev, running
// and ready, as the StatefulSet controller and the kubelet would.
func revisionPod(t *testing.T, ns, store string, i int, rev, image string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s-%d", store, i)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			"app.kubernetes.io/name": "kvnode", "app.kubernetes.io/instance": store, kvv1.LabelManagedBy: kvv1.ManagedBy, appsv1.ControllerRevisionHashLabelKey: rev}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kvnode", Image: image}}},
	}
	err := k8s.Create(ctx, p)
	if apierrors.IsAlreadyExists(err) {
		mustGet(t, ns, name, p)
		p.Labels[appsv1.ControllerRevisionHashLabelKey] = rev
		p.Spec.Containers[0].Image = image
		err = k8s.Update(ctx, p)
	}
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, ns, name, p)
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := k8s.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
}

func setRevisions(t *testing.T, ns, store, current, update string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the StatefulSet's revisions", func() error {
		sts := &appsv1.StatefulSet{}
		if err := get(t, ns, store, sts); err != nil {
			return err
		}
		sts.Status.CurrentRevision, sts.Status.UpdateRevision = current, update
		return k8s.Status().Update(context.Background(), sts)
	})
}

// waitDeleted waits until the operator deleted pod name, and returns the
// time it took.
func waitDeleted(t *testing.T, ns, name string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, name+" restarted", func() error {
		if err := get(t, ns, name, &corev1.Pod{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod %s: %v", name, err)
		}
		return nil
	})
}

// A new pod template is rolled out by the operator, one member at a time:
// followers first, the leader last after its leadership was handed over,
// each once every member is healthy again; status says Upgrading with
// the count and the images, never Degraded; a member that does not come
// back stops the rollout with UpgradeStopped until it does.
func TestRolloutRestartsTheLeaderLast(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("up", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "up", 3)
	waitStatus(t, ns, "up", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Leader != "up-0" {
			return fmt.Errorf("phase %s leader %s", st.Phase, st.Leader)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "up", sts)
	if sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Fatalf("update strategy %s: the StatefulSet controller would roll the pods with no regard for the leader", sts.Spec.UpdateStrategy.Type)
	}
	for i := 0; i < 3; i++ {
		revisionPod(t, ns, "up", i, "r1", "kvstore.dev/kvnode:old")
	}
	if err := update(t, ns, "up", func(k *kvv1.KeyValueStore) { k.Spec.Image = "kvstore.dev/kvnode:new" }); err != nil {
		t.Fatal(err)
	}
	setRevisions(t, ns, "up", "r1", "r2")

	degraded := func() {
		t.Helper()
		k := &kvv1.KeyValueStore{}
		mustGet(t, ns, "up", k)
		if c := meta.FindStatusCondition(k.Status.Conditions, kvv1.ConditionDegraded); c != nil && c.Status == metav1.ConditionTrue {
			t.Fatalf("Degraded during a planned rollout: %s: %s", c.Reason, c.Message)
		}
	}
	restart := func(i int) {
		t.Helper()
		name := fmt.Sprintf("up-%d", i)
		waitDeleted(t, ns, name)
		degraded()
		// The member is down while its pod is made again.
		var up []int
		for o := 0; o < 3; o++ {
			if o != i {
				up = append(up, o)
			}
		}
		fakeKV.setRunning(ns+"/up", up...)
		time.Sleep(300 * time.Millisecond)
		degraded()
		revisionPod(t, ns, "up", i, "r2", "kvstore.dev/kvnode:new")
		fakeKV.setRunning(ns+"/up", 0, 1, 2)
	}
	restart(2)
	waitStatus(t, ns, "up", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseUpgrading || st.Upgrade == nil || st.Upgrade.TargetImage != "kvstore.dev/kvnode:new" || st.Upgrade.CurrentImage != "kvstore.dev/kvnode:old" {
			return fmt.Errorf("phase %s, upgrade %+v", st.Phase, st.Upgrade)
		}
		return nil
	})
	restart(1)
	// The leader last, once it no longer leads.
	waitDeleted(t, ns, "up-0")
	calls := strings.Join(fakeKV.calls(ns+"/up"), ",")
	if !strings.HasSuffix(calls, "TransferLeadership 0") {
		t.Fatalf("the leader was restarted without handing leadership over first: calls %s", calls)
	}
	revisionPod(t, ns, "up", 0, "r2", "kvstore.dev/kvnode:new")
	setRevisions(t, ns, "up", "r2", "r2")
	waitStatus(t, ns, "up", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Upgrade != nil {
			return fmt.Errorf("phase %s, upgrade %+v", st.Phase, st.Upgrade)
		}
		return nil
	})
	if !recorder.has("up Upgraded") || !recorder.has("up LeadershipTransferred") {
		t.Fatalf("events: %v", recorder.events)
	}

	// Another template: the restarted member stays down, and the rollout
	// stops there, saying why, until it is back.
	if err := update(t, ns, "up", func(k *kvv1.KeyValueStore) { k.Spec.Image = "kvstore.dev/kvnode:broken" }); err != nil {
		t.Fatal(err)
	}
	setRevisions(t, ns, "up", "r2", "r3")
	// The followers in the order of restarts: the highest ordinal first.
	k := &kvv1.KeyValueStore{}
	mustGet(t, ns, "up", k)
	var followers []int
	for o := 2; o >= 0; o-- {
		if fmt.Sprintf("up-%d", o) != k.Status.Leader {
			followers = append(followers, o)
		}
	}
	first, second := followers[0], followers[1]
	waitDeleted(t, ns, fmt.Sprintf("up-%d", first))
	var rest []int
	for o := 0; o < 3; o++ {
		if o != first {
			rest = append(rest, o)
		}
	}
	fakeKV.setRunning(ns+"/up", rest...)
	clock.Advance(6 * time.Minute)
	waitStatus(t, ns, "up", func(st kvv1.KeyValueStoreStatus) error {
		c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if c == nil || c.Reason != kvv1.ReasonUpgradeStopped || !strings.Contains(c.Message, fmt.Sprintf("up-%d", first)) || !strings.Contains(c.Message, "does not exist") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	if !recorder.has("up UpgradeStopped") {
		t.Fatalf("no UpgradeStopped event: %v", recorder.events)
	}
	for _, o := range rest {
		if err := get(t, ns, fmt.Sprintf("up-%d", o), &corev1.Pod{}); err != nil {
			t.Fatalf("another member was restarted while one was down: %v", err)
		}
	}
	// Resumed by itself once the member is back: the other follower next.
	revisionPod(t, ns, "up", first, "r3", "kvstore.dev/kvnode:broken")
	fakeKV.setRunning(ns+"/up", 0, 1, 2)
	waitDeleted(t, ns, fmt.Sprintf("up-%d", second))
}

// A store of one voter: nobody to hand leadership to, so its pod is
// restarted as it is, rather than the rollout waiting for ever on a
// transfer that cannot happen.
func TestRolloutOfASingleVoter(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("one", testutil.InNamespace(ns), testutil.WithReplicas(1))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "one", 1)
	waitStatus(t, ns, "one", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Leader != "one-0" {
			return fmt.Errorf("phase %s leader %s", st.Phase, st.Leader)
		}
		return nil
	})
	revisionPod(t, ns, "one", 0, "r1", "kvstore.dev/kvnode:old")
	setRevisions(t, ns, "one", "r1", "r2")
	waitDeleted(t, ns, "one-0")
	if calls := strings.Join(fakeKV.calls(ns+"/one"), ","); strings.Contains(calls, "TransferLeadership") {
		t.Fatalf("a transfer was tried with no other voter: %s", calls)
	}
}

// The StatefulSet made again (here deleted by a person) while its pods
// run: it starts with as many pods as run, not fewer, which it would
// delete at once, members or not.
func TestStatefulSetMadeAgainKeepsThePodsThatRun(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("as", testutil.InNamespace(ns), testutil.WithReplicas(3), testutil.WithAutoscaling(3, 5))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "as", &appsv1.StatefulSet{}) })
	scaleStatefulSet := func(n int32) {
		testutil.Eventually(t, 10*time.Second, "scaled", func() error {
			sts := &appsv1.StatefulSet{}
			if err := get(t, ns, "as", sts); err != nil {
				return err
			}
			sts.Spec.Replicas = &n
			return k8s.Update(ctx, sts)
		})
	}
	scaleStatefulSet(5) // as the autoscaler would
	runPods(t, ns, "as", 5)
	if err := update(t, ns, "as", func(k *kvv1.KeyValueStore) { k.Spec.Paused = true }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "as", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhasePaused {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "as", sts)
	if err := k8s.Delete(ctx, sts); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet gone", func() error {
		if err := get(t, ns, "as", &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("StatefulSet: %v", err)
		}
		return nil
	})
	if err := update(t, ns, "as", func(k *kvv1.KeyValueStore) { k.Spec.Paused = false }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet made again", func() error { return get(t, ns, "as", sts) })
	if *sts.Spec.Replicas != 5 {
		t.Fatalf("made again with %d replicas while 5 pods run: the StatefulSet controller would delete the others", *sts.Spec.Replicas)
	}
}
