// Package chart checks that the Helm chart (charts/kvstore-operator)
// installs what config/default does: the same objects, RBAC rules,
// Deployment and CRDs, so that a change to one that is not brought to the
// other fails here. It runs helm and kubectl (KV_HELM, KV_KUBECTL: make
// test builds both from the Go module proxy).
package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// namespace is config/default's; helm gets it with --namespace.
const namespace = "kvstore-system"

func tool(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: run the chart tests with make test", env)
		}
		t.Skipf("%s is not set: run the chart tests with make test", env)
	}
	return p
}

// render runs a command in the repository's root and splits its YAML
// output into objects keyed kind/namespace/name.
func render(t *testing.T, name string, args ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	objs := map[string]*unstructured.Unstructured{}
	for _, doc := range strings.Split("\n"+string(out), "\n---") {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%s output: %v\n%s", filepath.Base(name), err, doc)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		k := key(u)
		if _, dup := objs[k]; dup {
			t.Fatalf("%s renders %s twice", filepath.Base(name), k)
		}
		objs[k] = u
	}
	return objs
}

func key(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// kustomize renders config/default. The chart does not create the
// namespace: helm install --create-namespace does.
func kustomize(t *testing.T) map[string]*unstructured.Unstructured {
	objs := render(t, tool(t, "KV_KUBECTL"), "kustomize", "config/default")
	for k, u := range objs {
		if u.GetKind() == "Namespace" {
			delete(objs, k)
		}
	}
	return objs
}

func helmTemplate(t *testing.T, set ...string) map[string]*unstructured.Unstructured {
	args := []string{"template", "kvstore-operator", "charts/kvstore-operator", "--namespace", namespace, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return render(t, tool(t, "KV_HELM"), args...)
}

// withoutHelmLabels drops what only says who installed an object: the chart adds
// helm's labels.
func withoutHelmLabels(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy()
	c.SetLabels(nil)
	c.SetAnnotations(nil)
	return c.Object
}

func sortedKeys(m map[string]*unstructured.Unstructured) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func compare(t *testing.T, want, got map[string]*unstructured.Unstructured) {
	t.Helper()
	for _, k := range sortedKeys(want) {
		g, ok := got[k]
		if !ok {
			t.Errorf("config/default has %s, the chart does not", k)
			continue
		}
		if w, g := withoutHelmLabels(want[k]), withoutHelmLabels(g); !reflect.DeepEqual(w, g) {
			wy, _ := yaml.Marshal(w)
			gy, _ := yaml.Marshal(g)
			t.Errorf("%s differs:\n--- config/default\n%s\n--- chart\n%s", k, wy, gy)
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart has %s, config/default does not", k)
		}
	}
}

func TestChartWithDefaultValuesIsConfigDefault(t *testing.T) {
	compare(t, kustomize(t), helmTemplate(t))
}

// With watchNamespace the manager's rules move into a Role (and a
// RoleBinding) in that namespace, what no Role can grant stays in a
// ClusterRole, and the manager is told the namespace; nothing else
// changes.
func TestChartScopedToANamespace(t *testing.T) {
	const watched = "apps"
	want := kustomize(t)
	got := helmTemplate(t, "watchNamespace="+watched)

	cr := want["ClusterRole//kvstore-manager-role"]
	crb := want["ClusterRoleBinding//kvstore-manager-rolebinding"]
	if cr == nil || crb == nil {
		t.Fatalf("config/default has no ClusterRole kvstore-manager-role and binding: %v", sortedKeys(want))
	}
	delete(want, key(cr))
	delete(want, key(crb))
	rules, _, _ := unstructured.NestedSlice(cr.Object, "rules")

	role := got["Role/"+watched+"/kvstore-manager-role"]
	if role == nil {
		t.Fatalf("no Role kvstore-manager-role in %s: %v", watched, sortedKeys(got))
	}
	if r, _, _ := unstructured.NestedSlice(role.Object, "rules"); !reflect.DeepEqual(r, rules) {
		t.Errorf("the Role's rules are not config/rbac/role.yaml's:\n%v\n%v", r, rules)
	}
	rb := got["RoleBinding/"+watched+"/kvstore-manager-rolebinding"]
	if rb == nil {
		t.Fatalf("no RoleBinding kvstore-manager-rolebinding in %s", watched)
	}
	if ref, _, _ := unstructured.NestedStringMap(rb.Object, "roleRef"); ref["kind"] != "Role" || ref["name"] != "kvstore-manager-role" {
		t.Errorf("RoleBinding refers to %v", ref)
	}
	if s, _, _ := unstructured.NestedSlice(rb.Object, "subjects"); !reflect.DeepEqual(s, crb.Object["subjects"]) {
		t.Errorf("RoleBinding subjects %v, want %v", s, crb.Object["subjects"])
	}
	delete(got, key(role))
	delete(got, key(rb))

	// Only what has no namespace is granted cluster-wide.
	scoped := got["ClusterRole//kvstore-manager-role-cluster-scoped"]
	if scoped == nil {
		t.Fatalf("no ClusterRole for nodes and persistent volumes: %v", sortedKeys(got))
	}
	sr, _, _ := unstructured.NestedSlice(scoped.Object, "rules")
	for _, r := range sr {
		res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
		for _, name := range res {
			if name != "nodes" && name != "persistentvolumes" && name != "namespaces" {
				t.Errorf("the cluster-scoped ClusterRole grants %s cluster-wide", name)
			}
		}
	}
	delete(got, key(scoped))
	delete(got, "ClusterRoleBinding//kvstore-manager-rolebinding-cluster-scoped")

	d := got["Deployment/"+namespace+"/kvstore-controller-manager"]
	if d == nil {
		t.Fatal("no Deployment")
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	env := containers[0].(map[string]any)["env"]
	podNamespace := map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}}
	if want := []any{podNamespace, map[string]any{"name": "WATCH_NAMESPACE", "value": watched}}; !reflect.DeepEqual(env, want) {
		t.Errorf("manager env %v, want %v", env, want)
	}
	// What is left is config/default's.
	containers[0].(map[string]any)["env"] = []any{podNamespace}
	if err := unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
	compare(t, want, got)
}
