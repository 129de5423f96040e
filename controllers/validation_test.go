package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
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

// rawSpecKVS is a paused KeyValueStore whose spec is exactly spec (with
// paused added).
func rawSpecKVS(ns, name string, spec map[string]any) *unstructured.Unstructured {
	spec["paused"] = true
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kvv1.GroupVersion.String(),
		"kind":       "KeyValueStore",
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec":       spec,
	}}
}

// spec.pod may add to the pod template, but not set what the operator
// sets: its variables and its volumes' names are refused at apply time,
// naming the field, rather than overridden, so that no manifest holds a
// value without effect. (Mounts over the operator's are refused when the
// store is reconciled: TestPodMountOverTheOperatorsIsRefused.)
func TestCRDPodOverrides(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	volume := func(name string) map[string]any {
		return map[string]any{"name": name, "emptyDir": map[string]any{}}
	}
	mount := func(path string) map[string]any {
		return map[string]any{"name": "extra", "mountPath": path}
	}
	type refusal struct {
		name  string
		pod   map[string]any
		field string
		want  string // "" when accepted
	}
	cases := []refusal{
		{"extra settings", map[string]any{
			"priorityClassName": "storage-critical", "serviceAccountName": "kvnode",
			"imagePullSecrets": []any{map[string]any{"name": "registry"}},
			"env":              []any{map[string]any{"name": "KV_LOG_LEVEL", "value": "debug"}, map[string]any{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}},
			"volumes":          []any{volume("extra")},
			"volumeMounts":     []any{mount("/etc/ssl/extra"), mount("/var/lib/kvnode-cache"), mount("/tmpfiles")},
		}, "", ""},
		{"volume named data", map[string]any{"volumes": []any{volume("data")}}, "spec.pod.volumes", "may not be named data, tls, tmp, access or postgres-ca"},
		{"volume named tls", map[string]any{"volumes": []any{volume("extra"), volume("tls")}}, "spec.pod.volumes", "may not be named data, tls, tmp, access or postgres-ca"},
		{"volume named tmp", map[string]any{"volumes": []any{volume("tmp")}}, "spec.pod.volumes", "may not be named data, tls, tmp, access or postgres-ca"},
		{"volume named access", map[string]any{"volumes": []any{volume("access")}}, "spec.pod.volumes", "may not be named data, tls, tmp, access or postgres-ca"},
	}
	// Every variable the operator sets, as the builder sets it (with a
	// rate limit, so that its variables are among them), for a Raft log
	// and for one in PostgreSQL (verified with a CA: every variable).
	rated := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) { k.Spec.Limits.RequestsPerSecond = 100 })
	pg := testutil.StoredKVS("demo", postgresLog(true))
	seen := map[string]bool{}
	for _, k := range []*kvv1.KeyValueStore{rated, pg} {
		for _, e := range statefulset.PodTemplate(k).Spec.Containers[0].Env {
			if seen[e.Name] {
				continue
			}
			seen[e.Name] = true
			cases = append(cases, refusal{"env " + e.Name, map[string]any{"env": []any{map[string]any{"name": e.Name, "value": "x"}}}, "spec.pod.env", "may not set a variable the operator sets: "})
		}
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, rawSpecKVS(ns, fmt.Sprintf("pod-%d", i), map[string]any{"pod": tc.pod}))
			if tc.want != "" {
				rejected(t, err, tc.field, tc.want)
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
	// The operator's volumes: the rule's names are the builder's.
	mtls := testutil.StoredKVS("demo", postgresLog(true))
	mtls.Status.ClientAuth = kvv1.ClientAuthMTLS
	volumes := statefulset.Build(testutil.StoredKVS("demo"), ptr.To[int32](3)).Spec.Template.Spec.Volumes
	volumes = append(volumes, statefulset.PodTemplate(mtls).Spec.Volumes...)
	for _, v := range volumes {
		if err := k8s.Create(ctx, rawSpecKVS(ns, "vol-"+v.Name, map[string]any{"pod": map[string]any{"volumes": []any{volume(v.Name)}}})); err == nil {
			t.Fatalf("a volume named %s, as the operator's, was accepted", v.Name)
		}
	}
}

func TestCRDAntiAffinity(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for _, mode := range []string{"Preferred", "Required", "None"} {
		if err := k8s.Create(ctx, rawSpecKVS(ns, strings.ToLower(mode), map[string]any{"antiAffinity": mode})); err != nil {
			t.Fatalf("antiAffinity %s: %v", mode, err)
		}
	}
	rejected(t, k8s.Create(ctx, rawSpecKVS(ns, "soft", map[string]any{"antiAffinity": "required"})), "spec.antiAffinity", `"Preferred"`, `"Required"`, `"None"`)
}

// A mount at, inside or above one of the operator's mounts makes the store
// Degraded, naming the field, and leaves the StatefulSet as it is; changed,
// the StatefulSet follows.
func TestPodMountOverTheOperatorsIsRefused(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	extra := func(path string) *kvv1.PodOverrides {
		return &kvv1.PodOverrides{
			Volumes:      []corev1.Volume{{Name: "extra", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			VolumeMounts: []corev1.VolumeMount{{Name: "extra", MountPath: path}},
		}
	}
	if err := k8s.Create(ctx, testutil.NewKVS("m", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "m", sts) })
	for _, path := range []string{"/var/lib/kvnode", "/var/lib/kvnode/snapshots", "/var/lib/", "var/lib/kvnode", "/etc/kvnode", "/etc/kvnode/tls/", "/etc/kvnode/access", "/tmp", "/"} {
		if err := update(t, ns, "m", func(k *kvv1.KeyValueStore) { k.Spec.Pod = extra(path) }); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ns, "m", func(st kvv1.KeyValueStoreStatus) error {
			d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
			if d == nil || d.Reason != kvv1.ReasonInvalidSpec || !strings.Contains(d.Message, fmt.Sprintf("spec.pod.volumeMounts[0].mountPath %q", path)) || st.Phase != kvv1.PhaseDegraded {
				return fmt.Errorf("mount at %s: phase %s, Degraded %+v", path, st.Phase, d)
			}
			return nil
		})
		mustGet(t, ns, "m", sts)
		if n := len(sts.Spec.Template.Spec.Volumes); n != 3 { // tls, tmp, access
			t.Fatalf("mount at %s: the StatefulSet was updated, %d volumes", path, n)
		}
	}
	if err := update(t, ns, "m", func(k *kvv1.KeyValueStore) { k.Spec.Pod = extra("/var/lib/kvnode-cache") }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the extra mount applied", func() error {
		mustGet(t, ns, "m", sts)
		if m := sts.Spec.Template.Spec.Containers[0].VolumeMounts; len(m) != 5 || m[4].MountPath != "/var/lib/kvnode-cache" { // after data, tls, tmp, access
			return fmt.Errorf("mounts %+v", m)
		}
		return nil
	})
	waitStatus(t, ns, "m", func(st kvv1.KeyValueStoreStatus) error {
		if d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded); d == nil || d.Reason == kvv1.ReasonInvalidSpec {
			return fmt.Errorf("Degraded %+v", d)
		}
		return nil
	})
}
