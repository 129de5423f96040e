package hpa

import (
	"testing"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
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

// A store whose log is in PostgreSQL is scaled as a Deployment, between
// the same bounds.
func TestBuildPostgres(t *testing.T) {
	h := Build(testutil.StoredKVS("demo", testutil.WithReplicas(2), testutil.WithAutoscaling(2, 8), func(k *kvv1.KeyValueStore) {
		k.Spec.Log = kvv1.LogSpec{Type: kvv1.LogPostgres, Postgres: &kvv1.PostgresLogSpec{Host: "pg", Database: "kv"}}
	}), 0)
	if r := h.Spec.ScaleTargetRef; r.Kind != "Deployment" || r.Name != "demo" || r.APIVersion != "apps/v1" {
		t.Fatalf("scale target %+v", r)
	}
	if *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 8 {
		t.Fatalf("bounds %d..%d, want 2..8", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}
