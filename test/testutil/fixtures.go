// Package testutil is what the tests of every package share: KeyValueStore
// fixtures built with options, golden files for the controllers' pure
// Build functions (`go test ./controllers/... -update` rewrites them after
// an intended change), polling until a condition holds, and an S3 server
// (SeaweedFS, StartS3) for the backup tests.
package testutil

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Golden compares obj, as YAML, with testdata/<name>.golden.yaml.
func Golden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it after an intended change):\n--- got\n%s", name, path, got)
	}
}

// Option changes a fixture.
type Option func(*kvv1.KeyValueStore)

// NewKVS returns a KeyValueStore as a user would write it: only what opts
// set, in the namespace "default"; the API server applies the defaults.
func NewKVS(name string, opts ...Option) *kvv1.KeyValueStore {
	kvs := &kvv1.KeyValueStore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	for _, o := range opts {
		o(kvs)
	}
	return kvs
}

// StoredKVS returns a KeyValueStore with the schema's defaults applied and
// a UID, as the API server would store it: the input of pure builders.
func StoredKVS(name string, opts ...Option) *kvv1.KeyValueStore {
	kvs := &kvv1.KeyValueStore{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("00000000-0000-0000-0000-000000000001")},
		Spec: kvv1.KeyValueStoreSpec{
			Replicas:        ptr.To[int32](3),
			Image:           "kvstore.dev/kvnode:dev",
			ImagePullPolicy: "IfNotPresent",
			Storage:         kvv1.StorageSpec{Size: ptr.To(resource.MustParse("1Gi")), RetentionPolicy: kvv1.RetentionPolicy{WhenScaled: kvv1.RetentionPolicyDelete, WhenDeleted: kvv1.RetentionPolicyRetain}},
			TLS:             kvv1.TLSSpec{CertificateLifetime: &metav1.Duration{Duration: 2160 * 3600e9}, RenewAtPercent: 67},
			Limits:          kvv1.LimitsSpec{MaxKeyBytes: 1024, MaxValueBytes: 1048576, MaxInFlight: 1024},
		},
	}
	for _, o := range opts {
		o(kvs)
	}
	return kvs
}

// InNamespace puts the store in namespace ns.
func InNamespace(ns string) Option { return func(k *kvv1.KeyValueStore) { k.Namespace = ns } }

// WithReplicas sets spec.replicas.
func WithReplicas(n int32) Option { return func(k *kvv1.KeyValueStore) { k.Spec.Replicas = ptr.To(n) } }

// WithAutoscaling turns autoscaling on.
func WithAutoscaling(minReplicas, maxReplicas int32) Option {
	return func(k *kvv1.KeyValueStore) {
		k.Spec.Autoscaling = &kvv1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(minReplicas), MaxReplicas: maxReplicas, TargetCPUUtilizationPercentage: 70}
	}
}
