package clientaccess

import (
	"strconv"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// The rules the pods read: each client with its rights, the time its
// certificates must be issued after, and its own rate limit only where
// spec.clients[].limits sets one (a client without keeps the rule it had,
// so the ConfigMap of a store without limits does not change).
func TestRulesConfigMap(t *testing.T) {
	kvs := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Clients = []kvv1.ClientSpec{
			{Name: "app", Prefix: "app/"},
			{Name: "reports", Access: kvv1.ClientReadOnly, Limits: &kvv1.ClientLimits{}},
			{Name: "bulk", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](5), Burst: ptr.To[int32](20)}},
			{Name: "ops", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](0)}},
			{Name: "spiky", Limits: &kvv1.ClientLimits{Burst: ptr.To[int32](3)}},
		}
	})
	issued := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cm, err := RulesConfigMap(kvs, kvv1.ClientAuthMTLS, map[string]time.Time{"app": issued, "bulk": issued})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "rules", cm)
	rules, err := access.ParseRules([]byte(cm.Data[access.RulesFile]))
	if err != nil {
		t.Fatalf("the pods would refuse the rules: %v", err)
	}
	for name, want := range map[string]string{"app": "-/-", "reports": "-/-", "bulk": "5/20", "ops": "0/-", "spiky": "-/3"} {
		c := rules[name]
		got := "-"
		if c.RequestsPerSecond != nil {
			got = ftoa(*c.RequestsPerSecond)
		}
		got += "/"
		if c.Burst != nil {
			got += ftoa(float64(*c.Burst))
		} else {
			got += "-"
		}
		if got != want {
			t.Errorf("%s: rate/burst %s, want %s", name, got, want)
		}
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
