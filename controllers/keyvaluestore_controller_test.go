package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

var nsCounter int

func namespace(t *testing.T) string {
	t.Helper()
	nsCounter++
	name := fmt.Sprintf("t%d-%d", nsCounter, time.Now().UnixNano()%100000)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// update reads the store, changes it and writes it back, again when the
// reconciler wrote in between (a conflict is not what a test is about).
func update(t *testing.T, ns, name string, change func(*kvv1.KeyValueStore)) error {
	t.Helper()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		k := &kvv1.KeyValueStore{}
		if err := get(t, ns, name, k); err != nil {
			return err
		}
		change(k)
		return k8s.Update(context.Background(), k)
	})
}

// mustGet reads an object that must exist.
func mustGet(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	if err := get(t, ns, name, obj); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, ns, name string, obj client.Object) error {
	t.Helper()
	return k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj)
}

func TestCRDRejectsBadManifests(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for _, tc := range []struct {
		name string
		kvs  *kvv1.KeyValueStore
		want string
	}{
		{"no replicas", testutil.NewKVS("r0", testutil.InNamespace(ns), testutil.WithReplicas(0)), "spec.replicas"},
		{"ten replicas", testutil.NewKVS("r10", testutil.InNamespace(ns), testutil.WithReplicas(10)), "spec.replicas"},
		{"max below min", testutil.NewKVS("as1", testutil.InNamespace(ns), testutil.WithReplicas(3), testutil.WithAutoscaling(5, 4)), "autoscaling.maxReplicas may not be below autoscaling.minReplicas"},
		{"min below replicas", testutil.NewKVS("as2", testutil.InNamespace(ns), testutil.WithReplicas(5), testutil.WithAutoscaling(3, 9)), "autoscaling.minReplicas may not be below replicas"},
		{"bad pull policy", testutil.NewKVS("pp", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.ImagePullPolicy = "Sometimes" }), "spec.imagePullPolicy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.kvs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v, want a rejection naming %q", err, tc.want)
			}
		})
	}

	// Transition rules: storage may not shrink, the class and the TLS
	// Secret may not change.
	k := testutil.NewKVS("grow", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
		k.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
		k.Spec.Storage.StorageClassName = ptr.To("fast")
		k.Spec.Paused = true
	})
	if err := k8s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*kvv1.KeyValueStore)
		want   string
	}{
		{func(k *kvv1.KeyValueStore) { k.Spec.Storage.Size = ptr.To(resource.MustParse("1Gi")) }, "storage.size may not decrease"},
		{func(k *kvv1.KeyValueStore) { k.Spec.Storage.StorageClassName = ptr.To("slow") }, "storage.storageClassName is immutable"},
		{func(k *kvv1.KeyValueStore) { k.Spec.TLS.SecretName = ptr.To("mine") }, "tls.secretName is immutable"},
	} {
		if err := update(t, ns, "grow", tc.change); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Update = %v, want %q", err, tc.want)
		}
	}
	if err := update(t, ns, "grow", func(k *kvv1.KeyValueStore) { k.Spec.Storage.Size = ptr.To(resource.MustParse("3Gi")) }); err != nil {
		t.Fatalf("growing storage was rejected: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	ns := namespace(t)
	k := testutil.NewKVS("d", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Paused = true })
	if err := k8s.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	got := &kvv1.KeyValueStore{}
	mustGet(t, ns, "d", got)
	s := got.Spec
	if *s.Replicas != 3 || s.Image == "" || s.ImagePullPolicy != "IfNotPresent" || s.Storage.Size == nil || s.Storage.Size.Cmp(resource.MustParse("1Gi")) != 0 ||
		s.Storage.RetentionPolicy.WhenScaled != "Delete" || s.Storage.RetentionPolicy.WhenDeleted != "Retain" ||
		s.Limits.MaxKeyBytes != 1024 || s.TLS.RenewAtPercent != 67 || s.TLS.CertificateLifetime == nil || s.TLS.CertificateLifetime.Duration != 2160*time.Hour {
		t.Fatalf("defaults not applied: %+v", s)
	}
}

func TestReconcileCreatesChildrenWithOwnerReferences(t *testing.T) {
	ns := namespace(t)
	k := testutil.NewKVS("demo", testutil.InNamespace(ns))
	if err := k8s.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	children := []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-ca"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-tls"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-admin"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "demo-peers"}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
	}
	for _, c := range children {
		testutil.Eventually(t, 20*time.Second, "a condition", func() error {
			if err := get(t, ns, c.GetName(), c); err != nil {
				return fmt.Errorf("%T %s: %w", c, c.GetName(), err)
			}
			refs := c.GetOwnerReferences()
			if len(refs) != 1 || refs[0].Kind != "KeyValueStore" || refs[0].Name != "demo" || !*refs[0].Controller {
				return fmt.Errorf("%T %s owner references %+v", c, c.GetName(), refs)
			}
			return nil
		})
	}
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "demo", sts)
	if *sts.Spec.Replicas != 3 || sts.Spec.ServiceName != "demo-peers" {
		t.Fatalf("StatefulSet replicas %d service %s", *sts.Spec.Replicas, sts.Spec.ServiceName)
	}
	hpaList := &autoscalingv2.HorizontalPodAutoscalerList{}
	if err := k8s.List(context.Background(), hpaList, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(hpaList.Items) != 0 {
		t.Fatal("an HPA without autoscaling")
	}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		got := &kvv1.KeyValueStore{}
		mustGet(t, ns, "demo", got)
		st := got.Status
		ready := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
		if st.Phase != kvv1.PhaseCreating || ready == nil || ready.Reason != kvv1.ReasonCreating || st.ObservedGeneration != got.Generation ||
			st.Endpoint != "https://demo."+ns+".svc:8080" || st.Selector == "" || st.CertificateNotAfter == nil || st.Ready != "0/3" {
			return fmt.Errorf("status %+v", st)
		}
		if !strings.Contains(ready.Message, "demo-0") {
			return fmt.Errorf("Ready condition does not say what it waits for: %q", ready.Message)
		}
		return nil
	})
}

// runPods creates the pods the StatefulSet controller would, marks them
// running, and sets the StatefulSet's status as it would.
func runPods(t *testing.T, ns, name string, n int) {
	t.Helper()
	startPods(t, ns, name, n)
	setReadyPods(t, ns, name, n, n)
}

// startPods creates the pods the StatefulSet controller would and marks
// them running, their kvnodes answering; the StatefulSet does not count
// them ready yet.
func startPods(t *testing.T, ns, name string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		p := &corev1.Pod{
			// The labels of the StatefulSet's pod template.
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, i), Labels: kvv1.Labels(&kvv1.KeyValueStore{ObjectMeta: metav1.ObjectMeta{Name: name}})},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "kvnode", Image: "kvstore.dev/kvnode:dev"}}},
		}
		if err := k8s.Create(ctx, p); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		mustGet(t, ns, p.Name, p)
		p.Status.Phase = corev1.PodRunning
		if err := k8s.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var ords []int
	for i := 0; i < n; i++ {
		ords = append(ords, i)
	}
	fakeKV.setRunning(ns+"/"+name, ords...)
}

// setReadyPods sets the StatefulSet's status as its controller would with
// n pods, ready of them ready.
func setReadyPods(t *testing.T, ns, name string, n, ready int) {
	t.Helper()
	ctx := context.Background()
	testutil.Eventually(t, 10*time.Second, "a condition", func() error {
		sts := &appsv1.StatefulSet{}
		if err := get(t, ns, name, sts); err != nil {
			return err
		}
		sts.Status.Replicas, sts.Status.ReadyReplicas, sts.Status.AvailableReplicas = int32(n), int32(ready), int32(ready)
		return k8s.Status().Update(ctx, sts)
	})
}

func waitStatus(t *testing.T, ns, name string, check func(kvv1.KeyValueStoreStatus) error) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "a condition", func() error {
		got := &kvv1.KeyValueStore{}
		if err := get(t, ns, name, got); err != nil {
			return err
		}
		return check(got.Status)
	})
}

func TestMembershipBringsTheClusterToReadyAndScales(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("demo", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "demo", 3)
	waitStatus(t, ns, "demo", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Voters != 3 || st.Leader != "demo-0" || !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) || st.ClusterID == "" || !st.Bootstrapped || st.Ready != "3/3" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	calls := strings.Join(fakeKV.calls(ns+"/demo"), ",")
	if calls != "Bootstrap 0,AddNonVoter 1,AddNonVoter 2,Promote 1,Promote 2" {
		t.Fatalf("membership calls %s", calls)
	}
	if !recorder.has("demo Bootstrapped") || !recorder.has("demo MemberPromoted") {
		t.Fatalf("events: %v", recorder.events)
	}

	// Scale to 5 (kubectl scale uses the scale subresource).
	scale(t, ns, "demo", 5)
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		sts := &appsv1.StatefulSet{}
		mustGet(t, ns, "demo", sts)
		if *sts.Spec.Replicas != 5 {
			return fmt.Errorf("StatefulSet replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})
	runPods(t, ns, "demo", 5)
	waitStatus(t, ns, "demo", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 5 || st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// And back to 3: members leave before the StatefulSet shrinks.
	scale(t, ns, "demo", 3)
	waitStatus(t, ns, "demo", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 3 || len(st.Members) != 3 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		sts := &appsv1.StatefulSet{}
		mustGet(t, ns, "demo", sts)
		if *sts.Spec.Replicas != 3 {
			return fmt.Errorf("StatefulSet replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})
	calls = strings.Join(fakeKV.calls(ns+"/demo"), ",")
	if !strings.HasSuffix(calls, "Remove 4,Remove 3") {
		t.Fatalf("scale-down calls %s", calls)
	}
}

func scale(t *testing.T, ns, name string, n int32) {
	t.Helper()
	k := &kvv1.KeyValueStore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)))
	if err := k8s.SubResource("scale").Patch(context.Background(), k, patch); err != nil {
		t.Fatalf("scale subresource: %v", err)
	}
}

func TestPauseStopsChangesButKeepsStatusFresh(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("p", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error { return get(t, ns, "p", &appsv1.StatefulSet{}) })
	if err := update(t, ns, "p", func(k *kvv1.KeyValueStore) { k.Spec.Paused, k.Spec.Image = true, "kvstore.dev/kvnode:v2" }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "p", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhasePaused {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return nil
	})
	time.Sleep(time.Second)
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "p", sts)
	if img := sts.Spec.Template.Spec.Containers[0].Image; img != "kvstore.dev/kvnode:dev" {
		t.Fatalf("paused, yet the image changed to %s", img)
	}
	if err := update(t, ns, "p", func(k *kvv1.KeyValueStore) { k.Spec.Paused = false }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		mustGet(t, ns, "p", sts)
		if img := sts.Spec.Template.Spec.Containers[0].Image; img != "kvstore.dev/kvnode:v2" {
			return fmt.Errorf("image %s after unpausing", img)
		}
		return nil
	})
}

func TestAutoscalingAddsNonVotersOnly(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("as", testutil.InNamespace(ns), testutil.WithReplicas(3), testutil.WithAutoscaling(3, 7))); err != nil {
		t.Fatal(err)
	}
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error { return get(t, ns, "as", h) })
	if *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 7 || *h.Spec.Metrics[0].Resource.Target.AverageUtilization != 70 || h.Spec.ScaleTargetRef.Name != "as" {
		t.Fatalf("HPA %+v", h.Spec)
	}
	// The operator does not own the StatefulSet's replicas: the HPA does.
	sts := &appsv1.StatefulSet{}
	// It starts with the HPA's minimum (before: the default 1, as the first
	// write of the count was refused and never made again).
	testutil.Eventually(t, 20*time.Second, "the StatefulSet at the HPA's minimum", func() error {
		if err := get(t, ns, "as", sts); err != nil {
			return err
		}
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %v, want 3", sts.Spec.Replicas)
		}
		return nil
	})
	for _, mf := range sts.ManagedFields {
		if mf.Manager == FieldOwner && strings.Contains(mf.FieldsV1.GetRawString(), `"f:replicas"`) {
			t.Fatal("the operator owns spec.replicas of an autoscaled StatefulSet")
		}
	}
	runPods(t, ns, "as", 3)
	waitStatus(t, ns, "as", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 3 || st.Phase != kvv1.PhaseRunning {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// The autoscaler scales the StatefulSet to 5.
	mustGet(t, ns, "as", sts)
	sts.Spec.Replicas = ptr.To[int32](5)
	sts.ManagedFields = nil
	if err := k8s.Update(ctx, sts, client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "as", 5)
	waitStatus(t, ns, "as", func(st kvv1.KeyValueStoreStatus) error {
		if len(st.Members) != 5 || st.Voters != 3 {
			return fmt.Errorf("%d members, %d voters", len(st.Members), st.Voters)
		}
		return nil
	})
	mustGet(t, ns, "as", sts)
	if *sts.Spec.Replicas != 5 {
		t.Fatalf("the operator reset the autoscaler's replicas to %d", *sts.Spec.Replicas)
	}
}

func TestCertificateRenewal(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("c", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	before := &corev1.Secret{}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error { return get(t, ns, "c-tls", before) })
	var notAfter time.Time
	waitStatus(t, ns, "c", func(st kvv1.KeyValueStoreStatus) error {
		if st.CertificateNotAfter == nil {
			return fmt.Errorf("no certificate expiry in status")
		}
		notAfter = st.CertificateNotAfter.Time
		return nil
	})
	clock.Advance(61 * 24 * time.Hour) // past 67% of 90 days
	// A change, so that it reconciles now.
	if err := update(t, ns, "c", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"test/poke": "1"} }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		after := &corev1.Secret{}
		mustGet(t, ns, "c-tls", after)
		if string(after.Data["tls.crt"]) == string(before.Data["tls.crt"]) {
			return fmt.Errorf("certificate not renewed")
		}
		if string(after.Data["ca.crt"]) != string(before.Data["ca.crt"]) {
			return fmt.Errorf("the CA changed with the renewal")
		}
		return nil
	})
	waitStatus(t, ns, "c", func(st kvv1.KeyValueStoreStatus) error {
		if !st.CertificateNotAfter.After(notAfter) {
			return fmt.Errorf("expiry in status did not move")
		}
		return nil
	})
	if !recorder.has("c CertificateRenewed") {
		t.Fatalf("no CertificateRenewed event: %v", recorder.events)
	}

	// Renewal on request, once per annotation value.
	var renewed corev1.Secret
	mustGet(t, ns, "c-tls", &renewed)
	if err := update(t, ns, "c", func(k *kvv1.KeyValueStore) { k.Annotations[kvv1.AnnotationRenewCertificates] = "2026-11-27T00:00:00Z" }); err != nil {
		t.Fatal(err)
	}
	var forced corev1.Secret
	testutil.Eventually(t, 20*time.Second, "a condition", func() error {
		mustGet(t, ns, "c-tls", &forced)
		if string(forced.Data["tls.crt"]) == string(renewed.Data["tls.crt"]) {
			return fmt.Errorf("not renewed on request")
		}
		return nil
	})
	waitStatus(t, ns, "c", func(st kvv1.KeyValueStoreStatus) error {
		if st.CertificatesRenewedFor != "2026-11-27T00:00:00Z" {
			return fmt.Errorf("certificatesRenewedFor %q", st.CertificatesRenewedFor)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // later reconciles must not renew again for the same value
	var later corev1.Secret
	mustGet(t, ns, "c-tls", &later)
	if string(later.Data["tls.crt"]) != string(forced.Data["tls.crt"]) {
		t.Fatal("renewed again for the same annotation value")
	}
}
