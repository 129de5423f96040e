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

// A scale-down while no member leads keeps every pod (their volumes go
// with them under whenScaled: Delete) and says why; once a leader is
// back, members leave and only then does the StatefulSet shrink.
func TestScaleDownWithoutLeaderKeepsPods(t *testing.T) {
	ns := namespace(t)
	if err := k8s.Create(context.Background(), testutil.NewKVS("nl", testutil.InNamespace(ns), testutil.WithReplicas(5))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "nl", 5)
	waitStatus(t, ns, "nl", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 5 || st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	fakeKV.setLeader(ns+"/nl", -1)
	scale(t, ns, "nl", 3)
	waitStatus(t, ns, "nl", func(st kvv1.KeyValueStoreStatus) error {
		d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if d == nil || d.Status != "True" || d.Reason != kvv1.ReasonUnsafeMembershipChange || !strings.Contains(d.Message, "leader") {
			return fmt.Errorf("Degraded %+v", d)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "nl", sts)
	if *sts.Spec.Replicas != 5 {
		t.Fatalf("no leader, yet the StatefulSet shrank to %d", *sts.Spec.Replicas)
	}
	for _, c := range fakeKV.calls(ns + "/nl") {
		if strings.HasPrefix(c, kvv1.ActionRemove) {
			t.Fatalf("removed a member without a leader: %s", c)
		}
	}

	fakeKV.setLeader(ns+"/nl", 0)
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		mustGet(t, ns, "nl", sts)
		if *sts.Spec.Replicas != 3 {
			return fmt.Errorf("StatefulSet replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})
	if calls := strings.Join(fakeKV.calls(ns+"/nl"), ","); !strings.HasSuffix(calls, "Remove 4,Remove 3") {
		t.Fatalf("scale-down calls %s", calls)
	}
}
