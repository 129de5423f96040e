// Package clientaccess builds what a store's clients need and what limits
// them: the ConfigMap with the CA bundle alone (so that a client trusts
// the store without reading a Secret that holds private keys), the
// ConfigMap with the access rules the pods enforce (kvnode/access), and
// the NetworkPolicy of spec.networkPolicy.
package clientaccess

import (
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
)

// CAKey is the CA bundle's key in the CA ConfigMap (the name clients
// know from the Secrets: ca.crt).
const CAKey = "ca.crt"

// CAConfigMap is the ConfigMap <store>-ca with the CA bundle alone.
func CAConfigMap(kvs *kvv1.KeyValueStore, caPEM []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.CAConfigMapName(kvs)),
		Data:       map[string]string{CAKey: string(caPEM)},
	}
}

// ModeKey records, next to the rules, the client authentication the
// store's pods enforce: what an unset spec.clientAuth means for this store
// when its StatefulSet is gone (statefulset.ClientAuth).
const ModeKey = "clientAuth"

// RulesConfigMap is the ConfigMap the pods mount their access rules from:
// the clients of spec.clients, each with the time its certificates must
// be issued after (issuedAfter, from its Secret) and its own rate limit
// if it has one, and the mode.
func RulesConfigMap(kvs *kvv1.KeyValueStore, mode string, issuedAfter map[string]time.Time) (*corev1.ConfigMap, error) {
	rules := access.Rules{Clients: []access.Client{}}
	for _, c := range kvs.Spec.Clients {
		rule := access.Client{
			Name:        c.Name,
			Access:      orDefault(c.Access, kvv1.ClientReadWrite),
			Prefix:      c.Prefix,
			IssuedAfter: issuedAfter[c.Name],
		}
		// Only what the client sets: the rules of a client without limits
		// stay as they were, and an unset field takes the node's
		// (spec.limits, kvnode's --client-rate and --client-burst).
		if l := c.Limits; l != nil {
			if l.RequestsPerSecond != nil {
				rule.RequestsPerSecond = ptr.To(float64(*l.RequestsPerSecond))
			}
			if l.Burst != nil {
				rule.Burst = ptr.To(int(*l.Burst))
			}
		}
		rules.Clients = append(rules.Clients, rule)
	}
	b, err := json.MarshalIndent(rules, "", "  ")
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.AccessConfigMapName(kvs)),
		Data:       map[string]string{access.RulesFile: string(b) + "\n", ModeKey: mode},
	}, nil
}

// Operator says which pods are the operator, for the NetworkPolicy: its
// namespace ("" when unknown: any namespace) and its pods' labels.
type Operator struct {
	Namespace string
	Labels    map[string]string
}

// NetworkPolicy is the NetworkPolicy <store> of spec.networkPolicy:
//   - the API port admits the clients (each by its selectors, or by the
//     label kv.kvstore.dev/client=<name> in the store's namespace), the
//     operator (it calls the membership API), the store's members (they
//     forward writes and read indexes to each other), the store's backup
//     Jobs, and spec.networkPolicy.from;
//   - the Raft port admits the members only (a store whose log is in
//     PostgreSQL has none: its pods do not speak to each other);
//   - the gRPC port, while spec.frontends.grpc is on, admits the clients
//     and spec.networkPolicy.from: the operator, the members and backup
//     Jobs speak only to the API port.
//
// Probes come from the kubelet on the node, which NetworkPolicy
// implementations admit.
func NetworkPolicy(kvs *kvv1.KeyValueStore, op Operator) *networkingv1.NetworkPolicy {
	members := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)}}
	api := []networkingv1.NetworkPolicyPeer{
		members,
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{kvv1.LabelBackupStore: kvs.Name}}},
	}
	operator := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: op.Labels}, NamespaceSelector: &metav1.LabelSelector{}}
	if op.Namespace != "" {
		operator.NamespaceSelector.MatchLabels = map[string]string{corev1.LabelMetadataName: op.Namespace}
	}
	api = append(api, operator)
	var clients []networkingv1.NetworkPolicyPeer
	for _, c := range kvs.Spec.Clients {
		if c.PodSelector == nil && c.NamespaceSelector == nil {
			clients = append(clients, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{kvv1.LabelClient: c.Name}}})
			continue
		}
		clients = append(clients, networkingv1.NetworkPolicyPeer{PodSelector: c.PodSelector, NamespaceSelector: c.NamespaceSelector})
	}
	if np := kvs.Spec.NetworkPolicy; np != nil {
		for _, f := range np.From {
			clients = append(clients, networkingv1.NetworkPolicyPeer{PodSelector: f.PodSelector, NamespaceSelector: f.NamespaceSelector})
		}
	}
	api = append(api, clients...)
	port := func(p int) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(int32(p)))}}
	}
	ingress := []networkingv1.NetworkPolicyIngressRule{{Ports: port(kvv1.APIPort), From: api}}
	if !kvs.PostgresLog() {
		ingress = append(ingress, networkingv1.NetworkPolicyIngressRule{Ports: port(kvv1.PeerPort), From: []networkingv1.NetworkPolicyPeer{members}})
	}
	// A rule without peers would admit every source: with no client and
	// nothing in from, the gRPC port gets no rule, and stays closed.
	if kvs.GRPCEnabled() && len(clients) > 0 {
		ingress = append(ingress, networkingv1.NetworkPolicyIngressRule{Ports: port(kvv1.GRPCPort), From: clients})
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.NetworkPolicyName(kvs)),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     ingress,
		},
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
