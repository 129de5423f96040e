package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func bootstrapCalls(ns, name string) []string {
	var out []string
	for _, c := range fakeKV.calls(ns + "/" + name) {
		if strings.HasPrefix(c, kvv1.ActionBootstrap) {
			out = append(out, c)
		}
	}
	return out
}

// A store re-applied without status (GitOps, a restored manifest) over
// volumes that hold its cluster, while that cluster has no leader, takes
// the cluster the pods report as its own: it must not bootstrap a new,
// empty one.
func TestStoreWithoutStatusAdoptsTheClusterItsPodsReport(t *testing.T) {
	ns := namespace(t)
	for i := 0; i < 3; i++ {
		fakeKV.setReport(ns+"/ad", i, "old-cluster", true)
	}
	if err := k8s.Create(context.Background(), testutil.NewKVS("ad", testutil.InNamespace(ns), testutil.WithReplicas(3))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "ad", 3)
	waitStatus(t, ns, "ad", func(st kvv1.KeyValueStoreStatus) error {
		if !st.Bootstrapped || st.ClusterID != "old-cluster" {
			return fmt.Errorf("bootstrapped %v, cluster %q", st.Bootstrapped, st.ClusterID)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "the annotation", func() error {
		sts := &appsv1.StatefulSet{}
		mustGet(t, ns, "ad", sts)
		if got := sts.Annotations[kvv1.AnnotationClusterID]; got != "old-cluster" {
			return fmt.Errorf("annotation %q", got)
		}
		return nil
	})
	if b := bootstrapCalls(ns, "ad"); len(b) > 0 {
		t.Fatalf("bootstrapped a second cluster over pods that hold one: %v", b)
	}
	if !recorder.has("ad " + kvv1.ReasonClusterAdopted) {
		t.Fatal("no event says the cluster was adopted")
	}
}

// Pod 0's volume is empty but pod 1's holds Raft state (its cluster not
// yet named): a cluster exists, and a bootstrap of pod 0 would start a
// second one.
func TestNoBootstrapWhileAnotherPodHasState(t *testing.T) {
	ns := namespace(t)
	fakeKV.setReport(ns+"/ps", 1, "", true)
	if err := k8s.Create(context.Background(), testutil.NewKVS("ps", testutil.InNamespace(ns), testutil.WithReplicas(3))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "ps", 3)
	waitStatus(t, ns, "ps", func(st kvv1.KeyValueStoreStatus) error {
		if !st.Bootstrapped {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // a few reconciles
	if b := bootstrapCalls(ns, "ps"); len(b) > 0 {
		t.Fatalf("bootstrapped pod 0 while pod 1 holds a cluster: %v", b)
	}
}

// After a bootstrap the cluster's ID is recorded on the StatefulSet; a pod
// that then reports another ID makes the store Degraded with a Warning
// naming the pod and both IDs, and stops every membership change.
func TestClusterIDIsRecordedAndAMismatchStopsChanges(t *testing.T) {
	ns := namespace(t)
	if err := k8s.Create(context.Background(), testutil.NewKVS("mm", testutil.InNamespace(ns), testutil.WithReplicas(3))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "mm", 3)
	waitStatus(t, ns, "mm", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 3 || st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	testutil.Eventually(t, 10*time.Second, "the annotation", func() error {
		mustGet(t, ns, "mm", sts)
		if got := sts.Annotations[kvv1.AnnotationClusterID]; got != "fake-mm" {
			return fmt.Errorf("annotation %q after bootstrap", got)
		}
		return nil
	})

	fakeKV.setReport(ns+"/mm", 2, "other-cluster", true)
	// The operator would see it at its next periodic reconcile; a change
	// to the store brings that reconcile now.
	if err := update(t, ns, "mm", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"test.kvstore.dev/poke": "1"} }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "mm", func(st kvv1.KeyValueStoreStatus) error {
		d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if d == nil || d.Status != "True" || d.Reason != kvv1.ReasonClusterIDMismatch {
			return fmt.Errorf("Degraded %+v", d)
		}
		return nil
	})
	if !recorder.has("mm " + kvv1.ReasonClusterIDMismatch + " pod mm-2 reports cluster ID \"other-cluster\", but this store's cluster is \"fake-mm\"") {
		t.Fatal("no Warning names the pod and both IDs")
	}
	before := len(fakeKV.calls(ns + "/mm"))
	scale(t, ns, "mm", 5)
	runPods(t, ns, "mm", 5)
	time.Sleep(3 * time.Second)
	if calls := fakeKV.calls(ns + "/mm"); len(calls) != before {
		t.Fatalf("membership changed while a pod reports another cluster: %v", calls[before:])
	}
	got := &kvv1.KeyValueStore{}
	mustGet(t, ns, "mm", got)
	mustGet(t, ns, "mm", sts)
	if got.Status.ClusterID != "fake-mm" || sts.Annotations[kvv1.AnnotationClusterID] != "fake-mm" {
		t.Fatalf("the recorded ID changed: status %q, annotation %q", got.Status.ClusterID, sts.Annotations[kvv1.AnnotationClusterID])
	}
}
