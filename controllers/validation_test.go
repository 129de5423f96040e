package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// The CRD's rules on spec.storage, checked by the API server as kubectl
// apply would meet them. The manifests are unstructured because a typed
// Quantity always marshals as a canonical string: users also send plain
// integers and unnormalised strings.

// rawKVS is a paused KeyValueStore (so that the reconciler leaves it
// alone) whose spec.storage is exactly the given map.
func rawKVS(ns, name string, storage map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kvv1.GroupVersion.String(),
		"kind":       "KeyValueStore",
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec":       map[string]any{"paused": true, "storage": storage},
	}}
}

// rejected fails unless err is an API rejection naming every one of want.
func rejected(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want a rejection naming %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("rejected with %q, want it to name %q", err, w)
		}
	}
}

func TestCRDStorageSize(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for _, tc := range []struct {
		name string
		size any
		want string // the rule's message; "" when the size is accepted
	}{
		{"negative", "-1Gi", "storage.size must be greater than zero"},
		{"zero string", "0", "storage.size must be greater than zero"},
		{"zero with a suffix", "0Gi", "storage.size must be greater than zero"},
		{"zero integer", int64(0), "storage.size must be greater than zero"},
		{"negative integer", int64(-1), "storage.size must be greater than zero"},
		{"not a quantity", "lots", "storage.size must be a quantity such as 1Gi"},
		{"binary suffix", "1Gi", ""},
		{"smaller binary suffix", "500Mi", ""},
		{"integer bytes", int64(1073741824), ""},
		{"decimal suffix", "2G", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "size-" + strings.ReplaceAll(tc.name, " ", "-")
			err := k8s.Create(ctx, rawKVS(ns, name, map[string]any{"size": tc.size}))
			if tc.want != "" {
				rejected(t, err, "spec.storage.size", tc.want)
				return
			}
			if err != nil {
				t.Fatalf("size %v rejected: %v", tc.size, err)
			}
			// The typed client reads every accepted form as the same quantity.
			got := &kvv1.KeyValueStore{}
			if err := get(t, ns, name, got); err != nil {
				t.Fatal(err)
			}
			want := resource.MustParse(fmt.Sprint(tc.size))
			if got.Spec.Storage.Size == nil || got.Spec.Storage.Size.Cmp(want) != 0 {
				t.Fatalf("size %v read back as %v", tc.size, got.Spec.Storage.Size)
			}
		})
	}
}

func TestCRDStorageSizeMayGrowButNotShrink(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	if err := k8s.Create(ctx, rawKVS(ns, "s", map[string]any{"size": "2Gi"})); err != nil {
		t.Fatal(err)
	}
	// Each step patches spec.storage.size as sent; the rule compares
	// quantities, whether the old and the new value are integers or
	// strings.
	for _, step := range []struct {
		size any
		want string // "" when the change is accepted
	}{
		{"1Gi", "storage.size may not decrease"},
		{int64(1073741824), "storage.size may not decrease"}, // 1Gi as bytes
		{"2047Mi", "storage.size may not decrease"},
		{int64(2147483648), ""}, // 2Gi as bytes: the same size
		{"2Gi", ""},
		{"3Gi", ""},
		{int64(4294967296), ""}, // 4Gi as bytes
		{"3Gi", "storage.size may not decrease"},
		{"4096Mi", ""},
		{"0", "storage.size must be greater than zero"},
	} {
		patch, err := json.Marshal(map[string]any{"spec": map[string]any{"storage": map[string]any{"size": step.size}}})
		if err != nil {
			t.Fatal(err)
		}
		k := &kvv1.KeyValueStore{}
		k.Namespace, k.Name = ns, "s"
		err = k8s.Patch(ctx, k, client.RawPatch(types.MergePatchType, patch))
		if step.want != "" {
			rejected(t, err, "spec.storage.size", step.want)
			continue
		}
		if err != nil {
			t.Fatalf("size %v rejected: %v", step.size, err)
		}
	}
}

func TestCRDRetentionPolicy(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for _, field := range []string{"whenScaled", "whenDeleted"} {
		t.Run(field, func(t *testing.T) {
			err := k8s.Create(ctx, rawKVS(ns, "bad-"+strings.ToLower(field), map[string]any{
				"retentionPolicy": map[string]any{field: "Keep"},
			}))
			rejected(t, err, "spec.storage.retentionPolicy."+field, `"Retain"`, `"Delete"`)
		})
	}
	err := k8s.Create(ctx, rawKVS(ns, "good", map[string]any{
		"retentionPolicy": map[string]any{"whenScaled": "Retain", "whenDeleted": "Delete"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := &kvv1.KeyValueStore{}
	if err := get(t, ns, "good", got); err != nil {
		t.Fatal(err)
	}
	if p := got.Spec.Storage.RetentionPolicy; p.WhenScaled != kvv1.RetentionPolicyRetain || p.WhenDeleted != kvv1.RetentionPolicyDelete {
		t.Fatalf("retention policy read back as %+v", p)
	}
}

// TestCRDReplicasDescription: kubectl explain shows the schema's
// description, which must give the range the API server enforces.
func TestCRDReplicasDescription(t *testing.T) {
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := k8s.Get(context.Background(), types.NamespacedName{Name: "keyvaluestores.kv.kvstore.dev"}, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("%d versions, want v1alpha1 only", len(versions))
	}
	replicas, _, _ := unstructured.NestedMap(versions[0].(map[string]any),
		"schema", "openAPIV3Schema", "properties", "spec", "properties", "replicas")
	desc, _ := replicas["description"].(string)
	if !strings.Contains(desc, "1 to 9") {
		t.Fatalf("spec.replicas description does not give the range: %q", desc)
	}
	if replicas["minimum"] != int64(1) || replicas["maximum"] != int64(9) {
		t.Fatalf("spec.replicas bounds %v..%v, want 1..9", replicas["minimum"], replicas["maximum"])
	}
}
