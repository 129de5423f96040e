package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// unschedulable makes pod name Pending, unschedulable since since, and
// gives it a claim as the StatefulSet would have, bound to a local volume
// on node.
func unschedulable(t *testing.T, ns, name, node string, since time.Time) {
	t.Helper()
	ctx := context.Background()
	size := corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: size, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/disk"}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
		},
	}
	if err := k8s.Create(ctx, pv); err != nil {
		t.Fatal(err)
	}
	claim := &corev1.PersistentVolumeClaim{
		// Labelled as the StatefulSet's claim template labels its claims.
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-" + name, Labels: map[string]string{kvv1.LabelName: kvv1.LabelNameKVNode}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: size}, VolumeName: pv.Name},
	}
	if err := k8s.Create(ctx, claim); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{}
	mustGet(t, ns, name, p)
	p.Status.Phase = corev1.PodPending
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/3 nodes are available", LastTransitionTime: metav1.NewTime(since)}}
	if err := k8s.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
}

func claimGoing(t *testing.T, ns, name string) bool {
	c := &corev1.PersistentVolumeClaim{}
	if err := get(t, ns, name, c); err != nil {
		return true // gone
	}
	return c.DeletionTimestamp != nil
}

// A member whose pod could not be scheduled for spec.replaceAfter loses
// its claim and pod, one at a time, and only while the other voters hold
// a healthy majority.
func TestUnschedulableMemberIsReplaced(t *testing.T) {
	ns := namespace(t)
	runningStore(t, ns, "rep", func(k *kvv1.KeyValueStore) { k.Spec.ReplaceAfter = &metav1.Duration{Duration: 10 * time.Minute} })

	// Pods 1 and 2 cannot be scheduled: without them one of three voters
	// is healthy, so neither is replaced.
	fakeKV.setRunning(ns+"/rep", 0)
	// The fake members answer no event: a change makes the store look now.
	if err := update(t, ns, "rep", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"test/poke": "members down"} }); err != nil {
		t.Fatal(err)
	}
	// As in a cluster, the members are seen down before their pods have
	// been unschedulable for long: otherwise a reconcile that observed
	// them healthy just before could find a pod stuck for an hour.
	waitStatus(t, ns, "rep", func(st kvv1.KeyValueStoreStatus) error {
		for _, m := range st.Members {
			if m.Name != "rep-0" && m.Healthy {
				return fmt.Errorf("member %s still healthy", m.Name)
			}
		}
		return nil
	})
	unschedulable(t, ns, "rep-1", "gone-node", clock.Now().Add(-time.Hour))
	unschedulable(t, ns, "rep-2", "gone-node", clock.Now().Add(-time.Hour))
	waitStatus(t, ns, "rep", func(st kvv1.KeyValueStoreStatus) error {
		for _, c := range st.Conditions {
			if c.Type == kvv1.ConditionDegraded && strings.Contains(c.Message, "its volume is not replaced: only 1 of 3 voters are healthy") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", st)
	})
	if claimGoing(t, ns, "data-rep-1") || claimGoing(t, ns, "data-rep-2") {
		t.Fatal("a claim was deleted while the quorum depended on it")
	}

	// Pod 1 runs again: pod 2 alone is replaced, once.
	runPods(t, ns, "rep", 2)
	fakeKV.setRunning(ns+"/rep", 0, 1)
	testutil.Eventually(t, 20*time.Second, "pod 2's claim deleted", func() error {
		if !claimGoing(t, ns, "data-rep-2") {
			return fmt.Errorf("claim data-rep-2 still there")
		}
		return nil
	})
	if claimGoing(t, ns, "data-rep-1") {
		t.Fatal("the running member's claim was deleted")
	}
	waitStatus(t, ns, "rep", func(st kvv1.KeyValueStoreStatus) error {
		if st.Replacing != "rep-2" {
			return fmt.Errorf("status.replacing %q", st.Replacing)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "the ReplacingMember event", func() error {
		if !recorder.has("rep ReplacingMember pod rep-2 could not be scheduled") {
			return fmt.Errorf("no ReplacingMember event")
		}
		return nil
	})
}

// Not yet past spec.replaceAfter, or with the volume's node still there
// (unschedulable for want of CPU, a cordoned node): nothing is deleted.
func TestUnschedulableMemberIsKeptBeforeReplaceAfter(t *testing.T) {
	ns := namespace(t)
	if err := k8s.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "present-" + ns}}); err != nil {
		t.Fatal(err)
	}
	runningStore(t, ns, "wait", func(k *kvv1.KeyValueStore) { k.Spec.ReplaceAfter = &metav1.Duration{Duration: 10 * time.Minute} })
	fakeKV.setRunning(ns+"/wait", 0, 2) // without pod 1, two of three voters are healthy
	unschedulable(t, ns, "wait-1", "present-"+ns, clock.Now().Add(-time.Hour))
	unschedulable(t, ns, "wait-2", "gone-node", clock.Now().Add(-5*time.Minute))
	time.Sleep(3 * time.Second)
	if claimGoing(t, ns, "data-wait-2") {
		t.Fatal("the claim went before spec.replaceAfter")
	}
	if claimGoing(t, ns, "data-wait-1") {
		t.Fatal("the claim of a volume whose node exists went")
	}
}
