package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// Status follows what happens to the cluster, as a person watching
// `kubectl get kvs` and `kubectl describe` would check it.

// readyStore creates a store, runs its pods and waits until it is Ready.
func readyStore(t *testing.T, name string, replicas int32) string {
	t.Helper()
	ns := namespace(t)
	if err := k8s.Create(context.Background(), testutil.NewKVS(name, testutil.InNamespace(ns), testutil.WithReplicas(replicas))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, name, int(replicas))
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("phase %s, conditions %+v", st.Phase, st.Conditions)
		}
		return nil
	})
	return ns
}

// within fails unless check passes within d: the status a person reads
// must follow the cluster in seconds, not at the next periodic resync.
func within(t *testing.T, d time.Duration, what string, ns, name string, check func(kvv1.KeyValueStoreStatus) error) {
	t.Helper()
	testutil.Eventually(t, d, what, func() error {
		got := &kvv1.KeyValueStore{}
		if err := get(t, ns, name, got); err != nil {
			return err
		}
		return check(got.Status)
	})
}

// A membership step that fails says so: in Progressing, in Degraded and
// in a Warning event, not only in the operator's log.
func TestStepFailureIsReported(t *testing.T) {
	ns := namespace(t)
	const name = "f"
	fakeKV.setFailing(ns+"/"+name, "AddNonVoter 1", errors.New("503 the leader is stepping down"))
	if err := k8s.Create(context.Background(), testutil.NewKVS(name, testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, name, 3)
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		p := meta.FindStatusCondition(st.Conditions, kvv1.ConditionProgressing)
		d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if p == nil || !strings.Contains(p.Message, "AddNonVoter f-1") || !strings.Contains(p.Message, "503 the leader is stepping down") {
			return fmt.Errorf("Progressing %+v does not give the failed step and its error", p)
		}
		if d == nil || d.Status != metav1.ConditionTrue || d.Reason != kvv1.ReasonMembershipStepFailed || !strings.Contains(d.Message, "503 the leader is stepping down") {
			return fmt.Errorf("Degraded %+v", d)
		}
		if st.Phase != kvv1.PhaseDegraded {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return nil
	})
	if !recorder.has(name + " " + kvv1.ReasonMembershipStepFailed + " AddNonVoter f-1 failed: 503 the leader is stepping down") {
		t.Fatalf("no Warning event for the failed step: %v", recorder.events)
	}
	fakeKV.setFailing(ns+"/"+name, "AddNonVoter 1", nil)
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || !meta.IsStatusConditionFalse(st.Conditions, kvv1.ConditionDegraded) {
			return fmt.Errorf("phase %s, conditions %+v", st.Phase, st.Conditions)
		}
		return nil
	})
}

// A planned scale-up is Scaling from start to end, also while the new
// voters' pods are not ready yet; never Degraded.
func TestPlannedScaleUpIsScaling(t *testing.T) {
	const name = "up"
	ns := readyStore(t, name, 3)
	scale(t, ns, name, 5)
	// The new pods run and their kvnodes answer, but the kubelet has not
	// found them ready yet: the members join and are promoted meanwhile.
	startPods(t, ns, name, 5)
	setReadyPods(t, ns, name, 5, 3)
	var phases []string
	seen := func(st kvv1.KeyValueStoreStatus) {
		if len(phases) == 0 || phases[len(phases)-1] != st.Phase {
			phases = append(phases, st.Phase)
		}
	}
	within(t, 20*time.Second, "the new members promoted", ns, name, func(st kvv1.KeyValueStoreStatus) error {
		seen(st)
		if st.Voters != 5 {
			return fmt.Errorf("%d voters", st.Voters)
		}
		return nil
	})
	// Until the pods are ready it keeps saying it is scaling.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		got := &kvv1.KeyValueStore{}
		mustGet(t, ns, name, got)
		seen(got.Status)
		if p := meta.FindStatusCondition(got.Status.Conditions, kvv1.ConditionProgressing); got.Status.Phase != kvv1.PhaseScaling || p == nil || p.Status != metav1.ConditionTrue {
			t.Fatalf("5 voters, 3 of 5 pods ready: phase %s, Progressing %+v", got.Status.Phase, p)
		}
	}
	setReadyPods(t, ns, name, 5, 5)
	within(t, 5*time.Second, "Running once the pods are ready", ns, name, func(st kvv1.KeyValueStoreStatus) error {
		seen(st)
		if st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return nil
	})
	for _, p := range phases {
		if p == kvv1.PhaseDegraded {
			t.Fatalf("a planned scale-up went through the phases %v", phases)
		}
	}
}

// status.leader never names a pod that is gone: when the leader's pod is
// deleted it is cleared at once, and the new leader shows up once elected.
func TestLeaderFollowsPodDeletion(t *testing.T) {
	const name = "l"
	ns := readyStore(t, name, 3)
	// The other members still name the old leader until they elect another.
	fakeKV.setRunning(ns+"/"+name, 1, 2)
	if err := k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-0"}}); err != nil {
		t.Fatal(err)
	}
	within(t, 3*time.Second, "the deleted leader cleared", ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.Leader == name+"-0" {
			return fmt.Errorf("status.leader names the deleted pod %s", st.Leader)
		}
		return nil
	})
	fakeKV.setLeader(ns+"/"+name, 1)
	within(t, 4*time.Second, "the new leader", ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.Leader != name+"-1" {
			return fmt.Errorf("status.leader %q", st.Leader)
		}
		return nil
	})
}

// Ready follows within seconds once every member is healthy again, also
// when nothing in Kubernetes changes at that moment (the member catches up
// with the leader after its pod was already counted ready).
func TestReadyFollowsRecovery(t *testing.T) {
	const name = "r"
	ns := readyStore(t, name, 3)
	fakeKV.setRunning(ns+"/"+name, 0, 1)
	setReadyPods(t, ns, name, 3, 2)
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if !meta.IsStatusConditionFalse(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("conditions %+v", st.Conditions)
		}
		return nil
	})
	// The pod is ready again, its member not yet caught up.
	setReadyPods(t, ns, name, 3, 3)
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.ReadyReplicas != 3 || !meta.IsStatusConditionFalse(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("ready replicas %d, conditions %+v", st.ReadyReplicas, st.Conditions)
		}
		return nil
	})
	fakeKV.setRunning(ns+"/"+name, 0, 1, 2)
	start := time.Now()
	within(t, 4*time.Second, "Ready after the member caught up", ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) || st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("phase %s, conditions %+v", st.Phase, st.Conditions)
		}
		return nil
	})
	t.Logf("Ready %v after the member caught up", time.Since(start).Round(100*time.Millisecond))
}

// Every step executed gets an Event of its own that names its member. The
// events API folds events that differ only in their note into one series
// (client-go's recorder keys them by regarding object, reason and action),
// so without the member as the related object a second AddNonVoter
// recorded against the same resourceVersion of the store (a reconcile
// that read it from the cache before its last status write arrived) was
// shown as the first one again, "x2".
func TestEachStepHasItsOwnEvent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := namespace(t)
	// Paused: the running reconciler leaves it alone; the steps are made here.
	kvs := testutil.NewKVS("ev", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Paused = true })
	if err := k8s.Create(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: kubernetes.NewForConfigOrDie(restConfig).EventsV1()})
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	defer broadcaster.Shutdown()
	r := &KeyValueStoreReconciler{Client: k8s, Recorder: broadcaster.NewRecorder(k8s.Scheme(), "kvstore-operator"), Now: clock.Now}
	fakeKV.setRunning(ns+"/ev", 0, 1, 2)
	mc := fakeKV.client(kvs)
	for _, s := range []membership.Step{{Action: kvv1.ActionBootstrap, Ordinal: 0}, {Action: kvv1.ActionAddNonVoter, Ordinal: 1}, {Action: kvv1.ActionAddNonVoter, Ordinal: 2}} {
		st := &state{kvs: kvs, mc: mc, step: s, plan: membership.Observed{Leader: 0}}
		if res := r.stepMembership(ctx, st); res.outcome != proceed {
			t.Fatalf("%v: %+v", s, res)
		}
	}
	testutil.Eventually(t, 10*time.Second, "an event per step", func() error {
		var list eventsv1.EventList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var notes []string
		for _, e := range list.Items {
			n := e.Note
			if e.Series != nil {
				n += fmt.Sprintf(" (x%d)", e.Series.Count)
			}
			notes = append(notes, n)
		}
		got := strings.Join(notes, ", ")
		for _, want := range []string{"Bootstrap ev-0", "AddNonVoter ev-1", "AddNonVoter ev-2"} {
			if !strings.Contains(got, want) {
				return fmt.Errorf("events %q, want one for %s", got, want)
			}
		}
		if strings.Contains(got, "(x") {
			return fmt.Errorf("events %q: a step counted twice", got)
		}
		return nil
	})
}
