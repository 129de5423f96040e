package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/hpa"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
	"github.com/kvstore-operator/kvstore-operator/controllers/pdb"
	"github.com/kvstore-operator/kvstore-operator/controllers/services"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
	"github.com/kvstore-operator/kvstore-operator/controllers/tlssecrets"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// EventRecorder is the part of the events API the reconciler uses.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// MembershipClient observes and changes the Raft membership of a cluster.
type MembershipClient interface {
	Observe(ctx context.Context, pods int, lag uint64) membership.Observation
	Execute(ctx context.Context, s membership.Step, via int) error
	Close()
}

// KeyValueStoreReconciler reconciles KeyValueStores.
type KeyValueStoreReconciler struct {
	client.Client
	Recorder EventRecorder
	// Now is the clock (certificate renewal); tests replace it.
	Now func() time.Time
	// NewMembershipClient connects to a cluster's kvnodes with the admin
	// certificate; tests replace it.
	NewMembershipClient func(kvs *kvv1.KeyValueStore, ca, cert, key []byte) (MembershipClient, error)
}

// SetupWithManager registers the reconciler and what it watches.
func (r *KeyValueStoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.NewMembershipClient == nil {
		r.NewMembershipClient = func(kvs *kvv1.KeyValueStore, ca, cert, key []byte) (MembershipClient, error) {
			return membership.NewClient(kvs, ca, cert, key)
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kvv1.KeyValueStore{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Named("keyvaluestore").
		Complete(r)
}

// errWait is a typed "not ready yet": the reconcile stops there, records
// what it waits for and requeues, without logging an error.
type errWait struct{ what string }

func (e errWait) Error() string { return e.what }

// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores/scale,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile brings one KeyValueStore's children to what its spec asks:
//
//  1. TLS Secrets: the CA (once), the pods' certificates (renewed at
//     spec.tls.renewAtPercent of their lifetime), the admin certificate;
//  2. the headless and the client Service;
//  3. membership is observed (pods that run, the Raft configuration);
//  4. the StatefulSet, with as many pods as the membership plan allows;
//  5. one membership step (bootstrap, add, promote, transfer, remove, demote);
//  6. the PodDisruptionBudget and the HorizontalPodAutoscaler.
//
// Status is computed from what was observed and patched once at the end.
// With spec.paused nothing is changed but status is still refreshed.
func (r *KeyValueStoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	kvs := &kvv1.KeyValueStore{}
	if err := r.Get(ctx, req.NamespacedName, kvs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !kvs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // children go with their owner references
	}
	before := kvs.DeepCopy()
	obs, err := r.reconcile(ctx, kvs)
	var wait errWait
	switch {
	case errors.As(err, &wait):
		obs.waiting, err = wait.what, nil
	case err != nil:
		obs.err = err
	}
	setStatus(kvs, obs)
	if !equality.Semantic.DeepEqual(before.Status, kvs.Status) {
		if perr := r.Status().Patch(ctx, kvs, client.MergeFrom(before)); perr != nil {
			return ctrl.Result{}, errors.Join(err, perr)
		}
	}
	if err != nil {
		logger.Error(err, "reconcile failed", "keyvaluestore", req.NamespacedName)
		return ctrl.Result{}, err
	}
	switch {
	case obs.stepDone:
		// The next membership step is usually possible at once (a member
		// added can be promoted as soon as it has caught up).
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case obs.step != "" || obs.waiting != "":
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
}

func (r *KeyValueStoreReconciler) reconcile(ctx context.Context, kvs *kvv1.KeyValueStore) (observation, error) {
	var obs observation
	paused := kvs.Spec.Paused
	sel := kvv1.SelectorLabels(kvs)
	kvs.Status.Selector = labelSelector(sel)

	// 1. TLS.
	admin, err := r.syncTLS(ctx, kvs, paused)
	if err != nil {
		return obs, err
	}
	// 2. Services.
	if !paused {
		for _, s := range []*corev1.Service{services.BuildHeadless(kvs), services.BuildClient(kvs)} {
			if err := apply(ctx, r.Client, s); err != nil {
				return obs, err
			}
		}
	}
	// 3. Observe pods and members.
	live := &appsv1.StatefulSet{}
	stsKey := types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.StatefulSetName(kvs)}
	if err := r.Get(ctx, stsKey, live); err != nil {
		if !apierrors.IsNotFound(err) {
			return obs, err
		}
		live = nil
	}
	pods := int(kvs.Voters())
	if h := hpa.Build(kvs); h != nil {
		// The HPA decides the pod count, within its bounds.
		pods = int(*h.Spec.MinReplicas)
		if live != nil && live.Spec.Replicas != nil {
			pods = max(pods, int(*live.Spec.Replicas))
		}
	}
	if live != nil {
		obs.pods, obs.readyPods = live.Status.Replicas, live.Status.ReadyReplicas
	}
	running, err := r.runningPods(ctx, kvs)
	if err != nil {
		return obs, err
	}
	var mc MembershipClient
	plan := membership.Observed{Voters: int(kvs.Voters()), Pods: pods, Bootstrapped: kvs.Status.Bootstrapped, Leader: -1}
	if len(running) > 0 && admin != nil {
		mc, err = r.NewMembershipClient(kvs, admin.Data[tlssecrets.CACert], admin.Data[tlssecrets.TLSCert], admin.Data[tlssecrets.TLSKey])
		if err != nil {
			return obs, err
		}
		defer mc.Close()
		highest := pods
		for _, o := range running {
			highest = max(highest, o+1)
		}
		seen := mc.Observe(ctx, highest, 1000)
		plan.Running, plan.Members, plan.Leader = seen.Running, seen.Members, seen.Leader
		if view := seen.View; view != nil {
			obs.reachable = true
			obs.clusterID = view.ClusterID
			obs.leader = view.Leader
			for _, m := range view.Members {
				obs.members = append(obs.members, kvv1.MemberStatus{Name: m.ID, Role: m.Role, Healthy: m.Healthy})
				if m.Role == clusterapi.RoleVoter {
					obs.voters++
				}
			}
			if view.ClusterID != "" && !kvs.Status.Bootstrapped {
				kvs.Status.Bootstrapped = true // found a cluster made before a crash
			}
			plan.Bootstrapped = kvs.Status.Bootstrapped
		}
	}
	step, keep := membership.Plan(plan)

	// 4. StatefulSet.
	if !paused {
		var replicas *int32
		if !kvs.AutoscalingEnabled() {
			replicas = ptr.To(int32(keep))
		}
		desired := statefulset.Build(kvs, replicas)
		if live != nil {
			// volumeClaimTemplates cannot change after creation: keep the live
			// ones and say so, instead of failing every reconcile.
			if !equality.Semantic.DeepEqual(live.Spec.VolumeClaimTemplates[0].Spec.Resources, desired.Spec.VolumeClaimTemplates[0].Spec.Resources) {
				obs.immutable = "storage.size changed: a StatefulSet's volume claim templates are immutable; expand the PVCs (if the storage class allows) and recreate the StatefulSet with --cascade=orphan"
			}
			desired.Spec.VolumeClaimTemplates = live.Spec.VolumeClaimTemplates
			for i := range desired.Spec.VolumeClaimTemplates {
				desired.Spec.VolumeClaimTemplates[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"}
				desired.Spec.VolumeClaimTemplates[i].Status = corev1.PersistentVolumeClaimStatus{}
			}
		}
		if err := apply(ctx, r.Client, desired); err != nil {
			return obs, err
		}
		if live == nil && replicas == nil {
			// Autoscaled: start with the HPA's minimum under a field owner of
			// its own, so that the operator's owner never claims replicas
			// and the HPA can take the field over.
			initial := &appsv1.StatefulSet{
				TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
				ObjectMeta: metav1.ObjectMeta{Name: desired.Name, Namespace: desired.Namespace},
				Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To(int32(pods))},
			}
			if err := applyAs(ctx, r.Client, initial, FieldOwner+"-initial-replicas"); err != nil {
				return obs, err
			}
		}
	}

	// 5. One membership step.
	var pending error
	if step.Action != "" {
		obs.step = fmt.Sprintf("%s %s", step.Action, kvv1.PodName(kvs, step.Ordinal))
		if !paused {
			if err := r.execute(ctx, kvs, mc, plan, step); err != nil {
				return obs, err
			}
			obs.stepDone = true
		}
	} else {
		kvs.Status.Membership = nil
		if !kvs.Status.Bootstrapped {
			pending = errWait{fmt.Sprintf("waiting for pod %s to run", kvv1.PodName(kvs, 0))}
		}
	}

	// 6. PodDisruptionBudget and HorizontalPodAutoscaler.
	if !paused {
		if err := apply(ctx, r.Client, pdb.Build(kvs)); err != nil {
			return obs, err
		}
		if h := hpa.Build(kvs); h != nil {
			if err := apply(ctx, r.Client, h); err != nil {
				return obs, err
			}
		} else if err := r.Delete(ctx, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: kvs.Namespace, Name: kvv1.HPAName(kvs)}}); err != nil && !apierrors.IsNotFound(err) {
			return obs, err
		}
	}
	if pending == nil && obs.voters < kvs.Voters() && step.Action == "" && obs.reachable {
		pending = errWait{fmt.Sprintf("waiting for pods to run and catch up (%d/%d voters)", obs.voters, kvs.Voters())}
	}
	return obs, pending
}

// execute records the step in status, then makes it.
func (r *KeyValueStoreReconciler) execute(ctx context.Context, kvs *kvv1.KeyValueStore, mc MembershipClient, plan membership.Observed, step membership.Step) error {
	if m := kvs.Status.Membership; m == nil || m.Action != step.Action || m.Member != kvv1.PodName(kvs, step.Ordinal) {
		kvs.Status.Membership = &kvv1.MembershipStep{Action: step.Action, Member: kvv1.PodName(kvs, step.Ordinal), Started: metav1.NewTime(r.Now())}
	}
	via := step.Ordinal
	if step.Action != kvv1.ActionBootstrap {
		if plan.Leader >= 0 {
			via = plan.Leader
		} else if len(plan.Running) > 0 {
			via = plan.Running[0]
		}
	}
	if err := mc.Execute(ctx, step, via); err != nil {
		// The next reconcile plans again from what it observes.
		return errWait{fmt.Sprintf("%s %s: %v", step.Action, kvv1.PodName(kvs, step.Ordinal), err)}
	}
	if step.Action == kvv1.ActionBootstrap {
		kvs.Status.Bootstrapped = true
	}
	reason := map[string]string{
		kvv1.ActionBootstrap: "Bootstrapped", kvv1.ActionAddNonVoter: "MemberAdded", kvv1.ActionPromote: "MemberPromoted",
		kvv1.ActionDemote: "MemberDemoted", kvv1.ActionRemove: "MemberRemoved", kvv1.ActionTransfer: "LeadershipTransferred",
	}[step.Action]
	r.event(kvs, corev1.EventTypeNormal, reason, step.Action, fmt.Sprintf("%s %s", step.Action, kvv1.PodName(kvs, step.Ordinal)))
	return nil
}

// runningPods lists the ordinals of the store's pods that are running.
func (r *KeyValueStoreReconciler) runningPods(ctx context.Context, kvs *kvv1.KeyValueStore) ([]int, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs))); err != nil {
		return nil, err
	}
	var out []int
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		if n, ok := kvv1.PodOrdinal(kvs, p.Name); ok {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// syncTLS makes sure the certificates exist and are fresh, and returns the
// admin Secret (nil while paused before it exists).
func (r *KeyValueStoreReconciler) syncTLS(ctx context.Context, kvs *kvv1.KeyValueStore, paused bool) (*corev1.Secret, error) {
	now := r.Now()
	get := func(name string) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: name}, s)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return s, err
	}
	serving, err := get(kvv1.TLSSecretName(kvs))
	if err != nil {
		return nil, err
	}
	admin, err := get(kvv1.AdminSecretName(kvs))
	if err != nil {
		return nil, err
	}
	if kvs.Spec.TLS.SecretName != nil && *kvs.Spec.TLS.SecretName != "" {
		// A user-provided Secret: the operator only reads it. The admin
		// certificate must then be in a Secret named <name>-admin too.
		if serving == nil || admin == nil {
			return nil, errWait{fmt.Sprintf("waiting for Secrets %s and %s", kvv1.TLSSecretName(kvs), kvv1.AdminSecretName(kvs))}
		}
		_, notAfter := tlssecrets.NeedsRenewal(serving.Data[tlssecrets.TLSCert], 100, now)
		kvs.Status.CertificateNotAfter = ptr.To(metav1.NewTime(notAfter))
		return admin, nil
	}
	if paused {
		return admin, nil
	}
	existingCA, err := get(kvv1.CASecretName(kvs))
	if err != nil {
		return nil, err
	}
	caSecret, ca, err := tlssecrets.BuildCA(kvs, existingCA, now)
	if err != nil {
		return nil, err
	}
	if existingCA == nil || string(existingCA.Data[tlssecrets.CAKey]) != string(caSecret.Data[tlssecrets.CAKey]) {
		if err := apply(ctx, r.Client, caSecret); err != nil {
			return nil, err
		}
	}
	renew := kvs.Spec.TLS.RenewAtPercent
	if renew == 0 {
		renew = 67
	}
	if serving == nil || string(serving.Data[tlssecrets.CACert]) != string(ca.CertPEM) {
		serving = nil
	}
	forced := kvs.Annotations[kvv1.AnnotationRenewCertificates]
	// The Secret records the request it answered too: a reconcile that reads
	// a KeyValueStore from a cache not yet showing the new status must not
	// renew a second time.
	force := forced != "" && forced != kvs.Status.CertificatesRenewedFor && (serving == nil || serving.Annotations[kvv1.AnnotationRenewCertificates] != forced)
	if need, _ := tlssecrets.NeedsRenewal(secretData(serving, tlssecrets.TLSCert), renew, now); need || force {
		s, err := tlssecrets.BuildServing(kvs, ca, now)
		if err != nil {
			return nil, err
		}
		if forced != "" {
			s.Annotations = map[string]string{kvv1.AnnotationRenewCertificates: forced}
		}
		if err := apply(ctx, r.Client, s); err != nil {
			return nil, err
		}
		if serving != nil {
			r.event(kvs, corev1.EventTypeNormal, "CertificateRenewed", "RenewCertificate", "renewed the server and peer certificates in Secret "+s.Name)
		}
		serving = s
	}
	if need, _ := tlssecrets.NeedsRenewal(secretData(admin, tlssecrets.TLSCert), renew, now); need || force || string(secretData(admin, tlssecrets.CACert)) != string(ca.CertPEM) {
		s, err := tlssecrets.BuildAdmin(kvs, ca, now)
		if err != nil {
			return nil, err
		}
		if err := apply(ctx, r.Client, s); err != nil {
			return nil, err
		}
		admin = s
	}
	if force {
		kvs.Status.CertificatesRenewedFor = forced
	}
	_, notAfter := tlssecrets.NeedsRenewal(serving.Data[tlssecrets.TLSCert], renew, now)
	kvs.Status.CertificateNotAfter = ptr.To(metav1.NewTime(notAfter))
	return admin, nil
}

func secretData(s *corev1.Secret, key string) []byte {
	if s == nil {
		return nil
	}
	return s.Data[key]
}

func (r *KeyValueStoreReconciler) event(kvs *kvv1.KeyValueStore, typ, reason, action, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(kvs, nil, typ, reason, action, "%s", note)
	}
}

func labelSelector(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
