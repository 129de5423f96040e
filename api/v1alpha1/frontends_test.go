package v1alpha1

import (
	"testing"

	"k8s.io/utils/ptr"
)

// An unset spec.frontends, an unset front end and an unset enabled all
// mean on, as kvnode has them.
func TestFrontendsEnabled(t *testing.T) {
	on, off := &FrontendSpec{Enabled: ptr.To(true)}, &FrontendSpec{Enabled: ptr.To(false)}
	for _, c := range []struct {
		name       string
		frontends  *FrontendsSpec
		rest, grpc bool
	}{
		{"unset", nil, true, true},
		{"empty", &FrontendsSpec{}, true, true},
		{"enabled unset", &FrontendsSpec{REST: &FrontendSpec{}, GRPC: &FrontendSpec{}}, true, true},
		{"both on", &FrontendsSpec{REST: on, GRPC: on}, true, true},
		{"rest off", &FrontendsSpec{REST: off}, false, true},
		{"grpc off", &FrontendsSpec{GRPC: off}, true, false},
		{"grpc off, rest on", &FrontendsSpec{REST: on, GRPC: off}, true, false},
	} {
		kvs := &KeyValueStore{Spec: KeyValueStoreSpec{Frontends: c.frontends}}
		if kvs.RESTEnabled() != c.rest || kvs.GRPCEnabled() != c.grpc {
			t.Errorf("%s: rest %v, grpc %v; want %v, %v", c.name, kvs.RESTEnabled(), kvs.GRPCEnabled(), c.rest, c.grpc)
		}
	}
}
