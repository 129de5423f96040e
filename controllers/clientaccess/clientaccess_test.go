package clientaccess

import (
	"encoding/json"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// rule is the ingress rule of port, or nil.
func rule(np *networkingv1.NetworkPolicy, port int) *networkingv1.NetworkPolicyIngressRule {
	for i, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == port {
				return &np.Spec.Ingress[i]
			}
		}
	}
	return nil
}

func peers(r *networkingv1.NetworkPolicyIngressRule) string {
	var all []string
	for _, p := range r.From {
		b, _ := json.Marshal(p)
		all = append(all, string(b))
	}
	return strings.Join(all, "\n")
}

// The gRPC port admits the clients and spec.networkPolicy.from, the same
// peers as the API port less the operator, the members and backup Jobs
// (they never speak gRPC); off, it has no rule.
func TestNetworkPolicyGRPCPort(t *testing.T) {
	op := Operator{Namespace: "kvstore-system", Labels: map[string]string{"control-plane": "kvstore-operator"}}
	with := func(grpc bool) testutil.Option {
		return func(k *kvv1.KeyValueStore) {
			k.Spec.Clients = []kvv1.ClientSpec{{Name: "app"}, {Name: "web", PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
			k.Spec.NetworkPolicy = &kvv1.NetworkPolicySpec{Enabled: true, From: []kvv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": "monitoring"}}}}}
			k.Spec.Frontends = &kvv1.FrontendsSpec{GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(grpc)}}
		}
	}
	np := NetworkPolicy(testutil.StoredKVS("demo", with(true)), op)
	api, raft, grpc := rule(np, kvv1.APIPort), rule(np, kvv1.PeerPort), rule(np, kvv1.GRPCPort)
	if len(np.Spec.Ingress) != 3 || api == nil || raft == nil || grpc == nil {
		t.Fatalf("ingress %+v", np.Spec.Ingress)
	}
	if len(grpc.Ports) != 1 || *grpc.Ports[0].Protocol != "TCP" {
		t.Errorf("gRPC rule ports %+v", grpc.Ports)
	}
	got := peers(grpc)
	for _, want := range []string{`"kv.kvstore.dev/client":"app"`, `"app":"web"`, `"name":"monitoring"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the gRPC port does not admit %s:\n%s", want, got)
		}
		if !strings.Contains(peers(api), want) {
			t.Errorf("the API port does not admit %s", want)
		}
	}
	for _, not := range []string{`"kv.kvstore.dev/store"`, `"app.kubernetes.io/instance"`, `"control-plane"`} {
		if strings.Contains(got, not) {
			t.Errorf("the gRPC port admits %s:\n%s", not, got)
		}
	}
	if len(grpc.From) != 3 {
		t.Errorf("the gRPC port admits %d peers, want the 2 clients and the 1 of from", len(grpc.From))
	}

	off := NetworkPolicy(testutil.StoredKVS("demo", with(false)), op)
	if rule(off, kvv1.GRPCPort) != nil || len(off.Spec.Ingress) != 2 {
		t.Errorf("gRPC off: ingress %+v", off.Spec.Ingress)
	}
	if peers(rule(off, kvv1.APIPort)) != peers(api) {
		t.Error("turning gRPC off changed who reaches the API port")
	}
}

// With no client and nothing in from, the gRPC port gets no rule at all:
// a rule without peers would admit every source.
func TestNetworkPolicyGRPCPortWithoutPeers(t *testing.T) {
	np := NetworkPolicy(testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.NetworkPolicy = &kvv1.NetworkPolicySpec{Enabled: true}
	}), Operator{})
	for _, r := range np.Spec.Ingress {
		if len(r.From) == 0 {
			t.Errorf("a rule that admits everyone: %+v", r)
		}
	}
	if rule(np, kvv1.GRPCPort) != nil {
		t.Errorf("gRPC port rule without clients: %+v", np.Spec.Ingress)
	}
}
