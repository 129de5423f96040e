package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// storageClass creates a storage class (cluster-scoped, so named after the test's namespace).
func storageClass(t *testing.T, name string, expand bool) {
	t.Helper()
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "example.com/test", AllowVolumeExpansion: ptr.To(expand)}
	if err := k8s.Create(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
}

// boundClaims makes the members' claims as the StatefulSet controller
// and a provisioner would: bound, with capacity size.
func boundClaims(t *testing.T, ns, store, class string, n int, size string) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		c := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("data-%s-%d", store, i), Labels: map[string]string{"app.kubernetes.io/name": "kvnode", "app.kubernetes.io/instance": store}},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(class), VolumeName: fmt.Sprintf("pv-%s-%s-%d", ns, store, i),
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			},
		}
		if err := k8s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		setCapacity(t, ns, c.Name, size)
	}
}

func setCapacity(t *testing.T, ns, name, size string) {
	t.Helper()
	c := &corev1.PersistentVolumeClaim{}
	mustGet(t, ns, name, c)
	c.Status.Phase = corev1.ClaimBound
	c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	if err := k8s.Status().Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func claimRequests(t *testing.T, ns, store string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		c := &corev1.PersistentVolumeClaim{}
		mustGet(t, ns, fmt.Sprintf("data-%s-%d", store, i), c)
		out = append(out, c.Spec.Resources.Requests.Storage().String())
	}
	return out
}

// finishOrphanDeletion does what the garbage collector does for a
// StatefulSet deleted with --cascade=orphan: envtest runs none.
func finishOrphanDeletion(t *testing.T, ns, name string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "the StatefulSet deleted with its pods orphaned", func() error {
		sts := &appsv1.StatefulSet{}
		if err := get(t, ns, name, sts); err != nil {
			return err
		}
		if sts.DeletionTimestamp == nil {
			return fmt.Errorf("not deleted")
		}
		if len(sts.Finalizers) != 1 || sts.Finalizers[0] != metav1.FinalizerOrphanDependents {
			return fmt.Errorf("finalizers %v: not an orphaning delete", sts.Finalizers)
		}
		sts.Finalizers = nil
		return k8s.Update(context.Background(), sts)
	})
}

// spec.storage.size grows: every claim asks for the new size, status
// shows the resize until the volumes have it, and the StatefulSet is
// made again (its pods orphaned, not deleted) with the new template.
func TestVolumesGrowWithTheSpec(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	class := ns + "-expandable"
	storageClass(t, class, true)
	if err := k8s.Create(ctx, testutil.NewKVS("v", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Storage.StorageClassName = ptr.To(class) })); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "v", &appsv1.StatefulSet{}) })
	boundClaims(t, ns, "v", class, 3, "1Gi")
	if err := update(t, ns, "v", func(k *kvv1.KeyValueStore) { k.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi")) }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "claims growing", func() error {
		if got := strings.Join(claimRequests(t, ns, "v", 3), ","); got != "2Gi,2Gi,2Gi" {
			return fmt.Errorf("claim requests %s", got)
		}
		return nil
	})
	finishOrphanDeletion(t, ns, "v")
	testutil.Eventually(t, 20*time.Second, "the StatefulSet made again", func() error {
		sts := &appsv1.StatefulSet{}
		if err := get(t, ns, "v", sts); err != nil {
			return err
		}
		if size := statefulset.ClaimSize(sts); size.String() != "2Gi" {
			return fmt.Errorf("claim template %s", size.String())
		}
		return nil
	})
	waitStatus(t, ns, "v", func(st kvv1.KeyValueStoreStatus) error {
		if st.Volumes == nil || st.Volumes.Requested.String() != "2Gi" || len(st.Volumes.Resizing) != 3 {
			return fmt.Errorf("volumes %+v", st.Volumes)
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		setCapacity(t, ns, fmt.Sprintf("data-v-%d", i), "2Gi")
	}
	if err := update(t, ns, "v", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"test/poke": "1"} }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "v", func(st kvv1.KeyValueStoreStatus) error {
		if st.Volumes == nil || st.Volumes.Capacity.String() != "2Gi" || len(st.Volumes.Resizing) != 0 {
			return fmt.Errorf("volumes %+v", st.Volumes)
		}
		return nil
	})
}

// A storage class that cannot expand: the store says so, naming the
// claim, and serves on with the volumes it has.
func TestVolumesThatCannotGrowAreReported(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	class := ns + "-fixed"
	storageClass(t, class, false)
	if err := k8s.Create(ctx, testutil.NewKVS("f", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Storage.StorageClassName = ptr.To(class) })); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "f", &appsv1.StatefulSet{}) })
	boundClaims(t, ns, "f", class, 3, "1Gi")
	if err := update(t, ns, "f", func(k *kvv1.KeyValueStore) { k.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi")) }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "f", func(st kvv1.KeyValueStoreStatus) error {
		d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if d == nil || d.Reason != kvv1.ReasonVolumeExpansionRefused || !strings.Contains(d.Message, "data-f-0") || !strings.Contains(d.Message, "allowVolumeExpansion") {
			return fmt.Errorf("Degraded %+v", d)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	mustGet(t, ns, "f", sts)
	if sts.DeletionTimestamp != nil || statefulset.ClaimSize(sts).String() != "1Gi" {
		t.Fatal("the StatefulSet was re-created although the claims could not grow")
	}
}

// spec.storage.autoExpand grows the volumes when a member runs low, one
// step at a time, each once the last reached the file system, up to the
// ceiling.
func TestVolumesAutoExpand(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	class := ns + "-auto"
	storageClass(t, class, true)
	if err := k8s.Create(ctx, testutil.NewKVS("a", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
		k.Spec.Storage.StorageClassName = ptr.To(class)
		k.Spec.Storage.AutoExpand = &kvv1.AutoExpandSpec{Step: resource.MustParse("1Gi"), MaxSize: resource.MustParse("3Gi")}
	})); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "a", 3)
	waitStatus(t, ns, "a", func(st kvv1.KeyValueStoreStatus) error {
		if st.Voters != 3 {
			return fmt.Errorf("voters %d", st.Voters)
		}
		return nil
	})
	boundClaims(t, ns, "a", class, 3, "1Gi")
	const gi = 1 << 30
	low := func(capacity uint64) clusterapi.StorageStatus {
		return clusterapi.StorageStatus{CapacityBytes: capacity, FreeBytes: capacity / 20, ReserveBytes: capacity / 50}
	}
	poke := func(v string) {
		if err := update(t, ns, "a", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"test/poke": v} }); err != nil {
			t.Fatal(err)
		}
	}
	fakeKV.setStorage(ns+"/a", 1, low(gi))
	poke("1")
	testutil.Eventually(t, 20*time.Second, "one step", func() error {
		if got := strings.Join(claimRequests(t, ns, "a", 3), ","); got != "2Gi,2Gi,2Gi" {
			return fmt.Errorf("claim requests %s", got)
		}
		return nil
	})
	finishOrphanDeletion(t, ns, "a")
	// Not again while the volumes have not grown, nor while the member's
	// file system is still the old size.
	poke("2")
	time.Sleep(2 * time.Second)
	if got := strings.Join(claimRequests(t, ns, "a", 3), ","); got != "2Gi,2Gi,2Gi" {
		t.Fatalf("grown again before the last growth arrived: %s", got)
	}
	for i := 0; i < 3; i++ {
		setCapacity(t, ns, fmt.Sprintf("data-a-%d", i), "2Gi")
	}
	poke("3")
	time.Sleep(2 * time.Second)
	if got := strings.Join(claimRequests(t, ns, "a", 3), ","); got != "2Gi,2Gi,2Gi" {
		t.Fatalf("grown again before the member's file system grew: %s", got)
	}
	fakeKV.setStorage(ns+"/a", 1, low(2*gi))
	poke("4")
	testutil.Eventually(t, 20*time.Second, "the second step, to the ceiling", func() error {
		if got := strings.Join(claimRequests(t, ns, "a", 3), ","); got != "3Gi,3Gi,3Gi" {
			return fmt.Errorf("claim requests %s", got)
		}
		return nil
	})
	finishOrphanDeletion(t, ns, "a")
	for i := 0; i < 3; i++ {
		setCapacity(t, ns, fmt.Sprintf("data-a-%d", i), "3Gi")
	}
	fakeKV.setStorage(ns+"/a", 1, low(3*gi))
	poke("5")
	time.Sleep(2 * time.Second)
	if got := strings.Join(claimRequests(t, ns, "a", 3), ","); got != "3Gi,3Gi,3Gi" {
		t.Fatalf("grown beyond maxSize: %s", got)
	}
	if !recorder.has("a AutoExpand") {
		t.Fatalf("no AutoExpand event: %v", recorder.events)
	}
}
