package services

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
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

// Both Services publish the gRPC port while spec.frontends.grpc is on, by
// the container port's name, and not when it is off.
func TestBuildGRPCPort(t *testing.T) {
	grpcPort := func(s *corev1.Service) *corev1.ServicePort {
		for i, p := range s.Spec.Ports {
			if p.Name == "grpc" {
				return &s.Spec.Ports[i]
			}
		}
		return nil
	}
	on := testutil.StoredKVS("demo")
	off := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Frontends = &kvv1.FrontendsSpec{GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(false)}}
	})
	restOff := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Frontends = &kvv1.FrontendsSpec{REST: &kvv1.FrontendSpec{Enabled: ptr.To(false)}}
	})
	for _, build := range []func(*kvv1.KeyValueStore) *corev1.Service{BuildHeadless, BuildClient} {
		for _, k := range []*kvv1.KeyValueStore{on, restOff} {
			s := build(k)
			p := grpcPort(s)
			if p == nil || p.Port != 50051 || p.TargetPort != intstr.FromString("grpc") || p.Protocol != corev1.ProtocolTCP {
				t.Errorf("Service %s: grpc port %+v", s.Name, p)
			}
			if s.Spec.Ports[0].Name != "api" {
				t.Errorf("Service %s without the API port (membership, probes, metrics): %v", s.Name, s.Spec.Ports)
			}
		}
		s := build(off)
		if p := grpcPort(s); p != nil {
			t.Errorf("Service %s: gRPC off, port %+v", s.Name, p)
		}
		if s.Spec.Ports[0].Name != "api" {
			t.Errorf("Service %s: ports %v", s.Name, s.Spec.Ports)
		}
	}
	if n := len(BuildHeadless(off).Spec.Ports); n != 2 {
		t.Errorf("headless Service with gRPC off: %d ports, want api and peer", n)
	}
}
