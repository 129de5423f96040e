package hpa

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	if Build(testutil.StoredKVS("demo"), 0) != nil {
		t.Fatal("an HPA without autoscaling")
	}
	h := Build(testutil.StoredKVS("demo", testutil.WithReplicas(3), testutil.WithAutoscaling(3, 7)), 0)
	testutil.Golden(t, "autoscaling", h)
	// minReplicas below the voters is lifted to them: the HPA never removes a voter.
	h = Build(testutil.StoredKVS("demo", testutil.WithReplicas(5), testutil.WithAutoscaling(2, 9)), 0)
	if *h.Spec.MinReplicas != 5 || h.Spec.MaxReplicas != 9 {
		t.Fatalf("bounds %d..%d, want 5..9", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	// Pods that still hold voters (replicas cut from 5 to 3, members 3 and 4
	// not yet demoted) are kept too: before, the HPA could delete them.
	h = Build(testutil.StoredKVS("demo", testutil.WithReplicas(3), testutil.WithAutoscaling(3, 9)), 5)
	if *h.Spec.MinReplicas != 5 {
		t.Fatalf("minReplicas %d with voters on 5 pods, want 5", *h.Spec.MinReplicas)
	}
}
