package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
)

// Client authentication modes (spec.clientAuth).
const (
	// ClientAuthMTLS: every request to the client API needs the
	// certificate of a client spec.clients names, and is held to that
	// client's rights.
	ClientAuthMTLS = access.ModeMTLS
	// ClientAuthNone: anyone who reaches the Service reads and writes
	// every key.
	ClientAuthNone = access.ModeNone
)

// Access levels of a client.
const (
	ClientReadWrite = access.ReadWrite
	ClientReadOnly  = access.ReadOnly
)

// ClientSpec is one named client of a store. The operator issues it a
// certificate in the Secret <store>-client-<name> (ca.crt, tls.crt,
// tls.key) and renews it like the pods' certificates.
type ClientSpec struct {
	// Name of the client: a DNS label. It is the certificate's identity
	// (common name "client:<name>") and part of its Secret's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Access: readWrite (the default) or readOnly (GET, HEAD and lists).
	// +kubebuilder:validation:Enum=readWrite;readOnly
	// +kubebuilder:default=readWrite
	// +optional
	Access string `json:"access,omitempty"`
	// Prefix, when set, is the part of the key space the client
	// reaches: it reads, writes and lists only keys that start with it
	// (403 otherwise; a list without ?prefix= lists the client's prefix).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// PodSelector and NamespaceSelector say which pods spec.networkPolicy
	// admits as this client, as a NetworkPolicy peer does. Neither set:
	// pods of the store's namespace labelled kv.kvstore.dev/client=<name>.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Limits, when set, are the client's own rate limit, instead of
	// spec.limits.requestsPerSecond and spec.limits.burst. They reach the
	// pods with the access rules, without restarting them.
	// +optional
	Limits *ClientLimits `json:"limits,omitempty"`
}

// ClientLimits is one client's own rate limit on each member. A field
// left unset takes the store's.
type ClientLimits struct {
	// RequestsPerSecond the client may make of each member, sustained;
	// more are answered 429 with Retry-After. 0: no limit for this
	// client. Unset: spec.limits.requestsPerSecond.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`
	// Burst is how many requests the client may make at once after being
	// idle. Unset: one second's worth of its own requestsPerSecond when
	// it has one, else spec.limits.burst.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Burst *int32 `json:"burst,omitempty"`
}

// NetworkPolicySpec asks for a NetworkPolicy in front of the pods.
type NetworkPolicySpec struct {
	// Enabled creates the NetworkPolicy <store>: the API port admits the
	// pods of spec.clients, the operator, the store's own members and
	// backup Jobs, and whatever From lists (e.g. a metrics scraper); the
	// gRPC port (while spec.frontends.grpc is on) the pods of spec.clients
	// and whatever From lists; the Raft port the members only.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// From are more peers admitted to the API port and the gRPC port, in
	// the NetworkPolicy's own terms.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	From []NetworkPolicyPeer `json:"from,omitempty"`
}

// NetworkPolicyPeer is a NetworkPolicy peer by labels (IP blocks are left
// out: pod IPs change, and a store's clients are pods).
//
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) || has(self.namespaceSelector)",message="networkPolicy.from: each peer needs podSelector or namespaceSelector"
type NetworkPolicyPeer struct {
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}
