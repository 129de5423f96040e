package services

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/controllers/golden"
)

func TestBuild(t *testing.T) {
	kvs := golden.NewKVS("demo")
	golden.Assert(t, "headless", BuildHeadless(kvs))
	golden.Assert(t, "client", BuildClient(kvs))
	if !BuildHeadless(kvs).Spec.PublishNotReadyAddresses {
		t.Fatal("members must resolve each other before they are ready")
	}
}
