package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;patch

// syncVolumes grows the members' volume claims to the size asked, then
// re-creates the StatefulSet so that members added later get it too.
//
// The size asked is the largest of spec.storage.size, every claim's
// current request (an earlier spec, or autoExpand: volumes never shrink
// and all members get the same), and autoExpand's next step when a
// member runs low on space. A claim grows by a patch of its request; the
// API server refuses it unless the claim's storage class allows
// expansion, and that refusal is what the store reports. The volume
// driver then grows the volume and, where it can, the file system under
// the running pod: no pod is restarted here.
//
// A StatefulSet's claim templates cannot change, so once every claim
// asks for the new size the StatefulSet is deleted with its pods
// orphaned and made again by the next step with the new template. The
// pods run on through it: the new StatefulSet adopts them, with the same
// template and so the same revision.
func (r *KeyValueStoreReconciler) syncVolumes(ctx context.Context, st *state) result {
	kvs := st.kvs
	var list corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs))); err != nil {
		return fail(err)
	}
	// Only the claims of the pods the StatefulSet has or keeps: a claim
	// kept from an earlier scale-down (retained) is mounted by no pod, so
	// a driver that grows file systems on the node would leave it pending
	// for good, and autoExpand would wait on it for ever.
	pods := max(st.keep, st.pods)
	if st.live != nil && st.live.Spec.Replicas != nil {
		pods = max(pods, int(*st.live.Spec.Replicas))
	}
	var claims []*corev1.PersistentVolumeClaim
	for i := range list.Items {
		c := &list.Items[i]
		// Only the members' data claims: <template>-<pod>.
		if pod, ok := strings.CutPrefix(c.Name, "data-"); ok {
			if o, member := kvv1.PodOrdinal(kvs, pod); member && o < pods && c.DeletionTimestamp == nil {
				claims = append(claims, c)
			}
		}
	}
	sort.Slice(claims, func(i, j int) bool { return claims[i].Name < claims[j].Name })

	want := resource.MustParse("1Gi") // the schema's default
	if s := kvs.Spec.Storage.Size; s != nil {
		want = s.DeepCopy()
	}
	if st.live != nil {
		want = larger(want, *statefulset.ClaimSize(st.live))
	}
	settled := true // every claim has what it asks for, in its file system too
	for _, c := range claims {
		req := c.Spec.Resources.Requests[corev1.ResourceStorage]
		want = larger(want, req)
		if c.Status.Capacity.Storage().Cmp(req) < 0 || resizePending(c) {
			settled = false
		}
	}
	if grown, why := autoExpand(kvs, want, settled, st.storage); why != "" {
		r.event(kvs, corev1.EventTypeNormal, "AutoExpand", "ExpandVolumes", fmt.Sprintf("%s: growing every volume from %s to %s", why, want.String(), grown.String()))
		want = grown
	}
	st.volumeSize = want

	status := &kvv1.VolumesStatus{Requested: ptr.To(want.DeepCopy())}
	for _, c := range claims {
		req := c.Spec.Resources.Requests[corev1.ResourceStorage]
		if req.Cmp(want) < 0 {
			patch := client.MergeFrom(c.DeepCopy())
			c.Spec.Resources.Requests[corev1.ResourceStorage] = want.DeepCopy()
			if err := r.Patch(ctx, c, patch); err != nil {
				kvs.Status.Volumes = status
				st.obs.volumesRefused = fmt.Sprintf("volume claim %s cannot grow from %s to %s: %v (its storage class must allow volume expansion: allowVolumeExpansion: true)",
					c.Name, req.String(), want.String(), err)
				return done() // the store serves on with the volumes it has
			}
			r.event(kvs, corev1.EventTypeNormal, "ExpandVolume", "PatchClaim", fmt.Sprintf("volume claim %s: %s → %s", c.Name, req.String(), want.String()))
		}
		capacity := c.Status.Capacity.Storage()
		if status.Capacity == nil || capacity.Cmp(*status.Capacity) < 0 {
			status.Capacity = ptr.To(capacity.DeepCopy())
		}
		switch {
		case capacity.Cmp(want) < 0:
			status.Resizing = append(status.Resizing, fmt.Sprintf("%s (%s of %s)", c.Name, capacity.String(), want.String()))
		case resizePending(c):
			status.Resizing = append(status.Resizing, c.Name+" (file system resize pending: the driver grows it when the pod restarts)")
		}
	}
	kvs.Status.Volumes = status
	if len(status.Resizing) > 0 {
		st.obs.resizing = "resizing volumes: " + strings.Join(status.Resizing, ", ")
	}

	if live := st.live; live != nil && live.DeletionTimestamp == nil && statefulset.ClaimSize(live).Cmp(want) < 0 {
		// Orphan, not cascade: the pods and their claims stay. The UID
		// precondition makes sure it is the StatefulSet just read.
		err := r.Delete(ctx, live, client.PropagationPolicy(metav1.DeletePropagationOrphan), client.Preconditions{UID: &live.UID})
		if client.IgnoreNotFound(err) != nil {
			return fail(fmt.Errorf("re-create the StatefulSet with volume claims of %s: %w", want.String(), err))
		}
		r.event(kvs, corev1.EventTypeNormal, "ExpandVolume", "RecreateStatefulSet", fmt.Sprintf("deleted the StatefulSet with its pods orphaned, to make it again with volume claims of %s; the pods run on", want.String()))
		return waitFor("the StatefulSet is being re-created with volume claims of %s", want.String())
	}
	return done()
}

// resizePending: the volume grew, its file system waits for the pod to
// restart (a driver that cannot grow it online).
func resizePending(c *corev1.PersistentVolumeClaim) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == corev1.PersistentVolumeClaimFileSystemResizePending && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// autoExpand returns the size to grow every volume to, and why, when
// spec.storage.autoExpand is set and a member runs low on space: it
// refuses writes, or its free space beyond its reserve is under a tenth
// of its volume. Not while a growth is still on its way (settled false),
// nor when the member's file system has not grown to its claim yet:
// otherwise every reconcile would add another step before the first one
// reached the disk.
func autoExpand(kvs *kvv1.KeyValueStore, current resource.Quantity, settled bool, storage map[string]clusterapi.StorageStatus) (resource.Quantity, string) {
	ae := kvs.Spec.Storage.AutoExpand
	if ae == nil || !settled || current.Cmp(ae.MaxSize) >= 0 {
		return current, ""
	}
	var low []string
	names := make([]string, 0, len(storage))
	for name := range storage {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := storage[name]
		if s.CapacityBytes == 0 || float64(s.CapacityBytes) < 0.9*float64(current.Value()) {
			continue // not on a volume of the current size yet
		}
		if s.Full || s.FreeBytes < s.ReserveBytes+s.CapacityBytes/10 {
			low = append(low, fmt.Sprintf("%s has %d of %d bytes free, %d reserved", name, s.FreeBytes, s.CapacityBytes, s.ReserveBytes))
		}
	}
	if len(low) == 0 {
		return current, ""
	}
	next := current.DeepCopy()
	next.Add(ae.Step)
	if next.Cmp(ae.MaxSize) > 0 {
		next = ae.MaxSize.DeepCopy()
	}
	return next, "running out of space (" + strings.Join(low, "; ") + ")"
}

func larger(a, b resource.Quantity) resource.Quantity {
	if b.Cmp(a) > 0 {
		return b.DeepCopy()
	}
	return a
}
