package pdb

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	p := Build(testutil.StoredKVS("demo"))
	testutil.Golden(t, "default", p)
	if p.Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatal("at most one member may be disrupted at a time")
	}
}
