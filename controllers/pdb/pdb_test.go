package pdb

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/controllers/golden"
)

func TestBuild(t *testing.T) {
	p := Build(golden.NewKVS("demo"))
	golden.Assert(t, "default", p)
	if p.Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatal("at most one member may be disrupted at a time")
	}
}
