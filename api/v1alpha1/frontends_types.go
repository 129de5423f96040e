package v1alpha1

// FrontendsSpec says which of kvnode's client front ends a store serves.
// Both are on unless turned off, as kvnode itself has them, and at least
// one stays on. Each has its own port on the pods and on both Services
// (<store> and <store>-peers); both take the same TLS and the same client
// identities (spec.clientAuth, spec.clients).
//
// +kubebuilder:validation:XValidation:rule="!(has(self.rest) && has(self.rest.enabled) && !self.rest.enabled && has(self.grpc) && has(self.grpc.enabled) && !self.grpc.enabled)",message="frontends.rest.enabled and frontends.grpc.enabled may not both be false: the clients need one front end"
type FrontendsSpec struct {
	// REST is the HTTP key API on the API port (8080): /v1/key/{key},
	// /v1/{key} and /v1/keys. Off, those routes answer 501 with the
	// reason; the membership API, the members' calls to each other,
	// probes and metrics stay on that port. Turning it off needs a kvnode
	// that knows --rest-api: an older one refuses to start, which stops
	// the rollout at the first member (UpgradeStopped).
	// +optional
	REST *FrontendSpec `json:"rest,omitempty"`
	// GRPC is the gRPC key API (keyvalue.v1.KeyValue, and grpc.health.v1)
	// on port 50051 (Service port grpc). Off, the port is closed and
	// removed from the pods, the Services and the NetworkPolicy.
	// +optional
	GRPC *FrontendSpec `json:"grpc,omitempty"`
}

// FrontendSpec turns one front end on or off.
type FrontendSpec struct {
	// Enabled serves the front end; false turns it off. Default true.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// on is what an unset front end, or an unset Enabled, means: on.
func (f *FrontendSpec) on() bool { return f == nil || f.Enabled == nil || *f.Enabled }

// RESTEnabled reports whether the pods serve the REST key API
// (spec.frontends.rest).
func (kvs *KeyValueStore) RESTEnabled() bool {
	return kvs.Spec.Frontends == nil || kvs.Spec.Frontends.REST.on()
}

// GRPCEnabled reports whether the pods serve the gRPC key API on GRPCPort
// (spec.frontends.grpc).
func (kvs *KeyValueStore) GRPCEnabled() bool {
	return kvs.Spec.Frontends == nil || kvs.Spec.Frontends.GRPC.on()
}
