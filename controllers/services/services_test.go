package services

import (
	"testing"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	kvs := testutil.StoredKVS("demo")
	testutil.Golden(t, "headless", BuildHeadless(kvs))
	testutil.Golden(t, "client", BuildClient(kvs))
	if !BuildHeadless(kvs).Spec.PublishNotReadyAddresses {
		t.Fatal("members must resolve each other before they are ready")
	}
}
