package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodOrdinal(t *testing.T) {
	kvs := &KeyValueStore{ObjectMeta: metav1.ObjectMeta{Name: "kv", Namespace: "default"}}
	for _, c := range []struct {
		name string
		ord  int
		ok   bool
	}{
		{"kv-0", 0, true},
		{"kv-12", 12, true},
		{PodName(kvs, 7), 7, true},
		{"kv", 0, false},
		{"kv-", 0, false},
		{"kv-x", 0, false},
		{"kv--1", 0, false},
		{"kv-+1", 0, false},
		{"kv-01", 0, false},  // not a name the StatefulSet gives
		{"kv-0-1", 0, false}, // a pod of the store kv-0
		{"other-1", 0, false},
	} {
		if ord, ok := PodOrdinal(kvs, c.name); ord != c.ord || ok != c.ok {
			t.Errorf("PodOrdinal(%q) = %d, %v; want %d, %v", c.name, ord, ok, c.ord, c.ok)
		}
	}
}
