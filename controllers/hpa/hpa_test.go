package hpa

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/controllers/golden"
)

func TestBuild(t *testing.T) {
	if Build(golden.NewKVS("demo")) != nil {
		t.Fatal("an HPA without autoscaling")
	}
	h := Build(golden.NewKVS("demo", golden.WithReplicas(3), golden.WithAutoscaling(3, 7)))
	golden.Assert(t, "autoscaling", h)
	// minReplicas below the voters is lifted to them: the HPA never removes a voter.
	h = Build(golden.NewKVS("demo", golden.WithReplicas(5), golden.WithAutoscaling(2, 9)))
	if *h.Spec.MinReplicas != 5 || h.Spec.MaxReplicas != 9 {
		t.Fatalf("bounds %d..%d, want 5..9", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}
