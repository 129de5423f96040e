package podmonitor

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	u, err := Build(testutil.StoredKVS("demo"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "default", u.Object)
	sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	for k, v := range kvv1.SelectorLabels(testutil.StoredKVS("demo")) {
		if sel[k] != v {
			t.Fatalf("selector %v does not select the store's pods", sel)
		}
	}
}

func TestBuildTrustsAUserSecretsCA(t *testing.T) {
	u, err := Build(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) { k.Spec.TLS.SecretName = ptr.To("mine") }))
	if err != nil {
		t.Fatal(err)
	}
	eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "podMetricsEndpoints")
	ca, _, _ := unstructured.NestedMap(eps[0].(map[string]any), "tlsConfig", "ca")
	if got, _, _ := unstructured.NestedString(ca, "secret", "name"); got != "mine" {
		t.Fatalf("tlsConfig.ca = %v, want the ca.crt of Secret mine", ca)
	}
}
