package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// frontends is spec.frontends with both enabled fields set.
func frontends(rest, grpc bool) *kvv1.FrontendsSpec {
	return &kvv1.FrontendsSpec{REST: &kvv1.FrontendSpec{Enabled: ptr.To(rest)}, GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(grpc)}}
}

// spec.frontends may turn either front end off, not both, on create and
// on update; an unset enabled is true; spec.pod.env may not set what the
// field sets.
func TestCRDFrontends(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	fe := func(rest, grpc any) map[string]any {
		f := map[string]any{}
		if rest != nil {
			f["rest"] = map[string]any{"enabled": rest}
		}
		if grpc != nil {
			f["grpc"] = map[string]any{"enabled": grpc}
		}
		return f
	}
	for _, tc := range []struct {
		name      string
		frontends map[string]any
		want      string // "" when accepted
	}{
		{"both off", fe(false, false), "frontends.rest.enabled and frontends.grpc.enabled may not both be false"},
		{"both on", fe(true, true), ""},
		{"rest off", fe(false, true), ""},
		{"grpc off", fe(true, false), ""},
		{"rest off alone", fe(false, nil), ""},
		{"grpc off alone", fe(nil, false), ""},
		{"empty", map[string]any{}, ""},
		{"enabled unset", map[string]any{"rest": map[string]any{}, "grpc": map[string]any{}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "fe-" + strings.ReplaceAll(tc.name, " ", "-")
			err := k8s.Create(ctx, rawSpecKVS(ns, name, map[string]any{"frontends": tc.frontends}))
			if tc.want != "" {
				rejected(t, err, "spec.frontends", tc.want)
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
	// enabled defaults to true where the front end is given.
	got := &kvv1.KeyValueStore{}
	mustGet(t, ns, "fe-enabled-unset", got)
	if f := got.Spec.Frontends; f == nil || f.REST == nil || f.GRPC == nil || f.REST.Enabled == nil || !*f.REST.Enabled || f.GRPC.Enabled == nil || !*f.GRPC.Enabled {
		t.Fatalf("spec.frontends read back as %+v", f)
	}
	// An update may not turn off the one left on.
	err := update(t, ns, "fe-rest-off", func(k *kvv1.KeyValueStore) { k.Spec.Frontends.GRPC.Enabled = ptr.To(false) })
	rejected(t, err, "spec.frontends", "may not both be false")
	if err := update(t, ns, "fe-rest-off", func(k *kvv1.KeyValueStore) { k.Spec.Frontends = frontends(true, false) }); err != nil {
		t.Fatalf("swapping the front ends: %v", err)
	}
	// The variables the field sets are refused in spec.pod.env.
	for _, v := range []string{"KV_GRPC_LISTEN", "KV_REST_API"} {
		err := k8s.Create(ctx, rawSpecKVS(ns, "env-"+strings.ToLower(strings.ReplaceAll(v, "_", "-")), map[string]any{
			"pod": map[string]any{"env": []any{map[string]any{"name": "KV_LOG_LEVEL", "value": "debug"}, map[string]any{"name": v, "value": ":9000"}}},
		}))
		rejected(t, err, "spec.pod.env", "may not set KV_GRPC_LISTEN or KV_REST_API: spec.frontends turns the front ends on and off")
	}
}

// The gRPC port is on the pods, both Services and the NetworkPolicy while
// spec.frontends.grpc is on, and leaves all of them when it is turned off
// (the operator's apply drops what it no longer lists); REST off is the
// flag --rest-api=false.
func TestFrontendsFollowTheSpec(t *testing.T) {
	ns := namespace(t)
	k := testutil.NewKVS("fe", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "app"}), func(k *kvv1.KeyValueStore) {
		k.Spec.NetworkPolicy = &kvv1.NetworkPolicySpec{Enabled: true}
	})
	if err := k8s.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	type seen struct{ stsPort, grpcEnvOff, restOff, clientSvc, peersSvc, policy bool }
	look := func() (seen, error) {
		var s seen
		sts, client, peers, np := &appsv1.StatefulSet{}, &corev1.Service{}, &corev1.Service{}, &networkingv1.NetworkPolicy{}
		if err := get(t, ns, "fe", sts); err != nil {
			return s, err
		}
		if err := get(t, ns, "fe", client); err != nil {
			return s, err
		}
		if err := get(t, ns, "fe-peers", peers); err != nil {
			return s, err
		}
		if err := get(t, ns, "fe", np); err != nil {
			return s, err
		}
		c := sts.Spec.Template.Spec.Containers[0]
		s.stsPort = slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "grpc" && p.ContainerPort == kvv1.GRPCPort })
		s.grpcEnvOff = slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KV_GRPC_LISTEN" && e.Value == "" })
		s.restOff = slices.Contains(c.Args, "--rest-api=false")
		hasGRPC := func(svc *corev1.Service) bool {
			return slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "grpc" && p.Port == kvv1.GRPCPort })
		}
		s.clientSvc, s.peersSvc = hasGRPC(client), hasGRPC(peers)
		s.policy = slices.ContainsFunc(np.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
			return len(r.Ports) == 1 && r.Ports[0].Port.IntValue() == kvv1.GRPCPort
		})
		if !slices.Contains(c.Args, "--client-auth=mtls") || len(client.Spec.Ports) == 0 || client.Spec.Ports[0].Name != "api" {
			return s, fmt.Errorf("the API port or client authentication lost: args %v, ports %v", c.Args, client.Spec.Ports)
		}
		return s, nil
	}
	expect := func(what string, want seen) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, what, func() error {
			got, err := look()
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("got %+v, want %+v", got, want)
			}
			return nil
		})
	}
	expect("both on", seen{stsPort: true, clientSvc: true, peersSvc: true, policy: true})
	if err := update(t, ns, "fe", func(k *kvv1.KeyValueStore) { k.Spec.Frontends = frontends(true, false) }); err != nil {
		t.Fatal(err)
	}
	expect("gRPC off", seen{grpcEnvOff: true})
	if err := update(t, ns, "fe", func(k *kvv1.KeyValueStore) { k.Spec.Frontends = frontends(false, true) }); err != nil {
		t.Fatal(err)
	}
	expect("REST off, gRPC on again", seen{stsPort: true, restOff: true, clientSvc: true, peersSvc: true, policy: true})
	if err := update(t, ns, "fe", func(k *kvv1.KeyValueStore) { k.Spec.Frontends = nil }); err != nil {
		t.Fatal(err)
	}
	expect("unset: both on", seen{stsPort: true, clientSvc: true, peersSvc: true, policy: true})
	// Nothing but the gRPC port left the Services on the way.
	peers := &corev1.Service{}
	mustGet(t, ns, "fe-peers", peers)
	var names []string
	for _, p := range peers.Spec.Ports {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"api", "grpc", "peer"}) {
		t.Errorf("headless Service ports %v", names)
	}
}
