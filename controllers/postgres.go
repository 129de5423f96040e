package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/deployment"
	"github.com/kvstore-operator/kvstore-operator/controllers/hpa"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
)

// A store whose log is in PostgreSQL (spec.log.type postgres) is a
// Deployment of kvnodes that hold nothing: PostgreSQL orders and keeps
// every write. The operator has no membership to manage and no kvnode to
// ask: what the store is, is what the Deployment reports of its pods.

// deploymentView is the Deployment of a postgres store as observed.
type deploymentView struct {
	exists bool
	// current: the Deployment controller has acted on its latest spec.
	current bool
	// desired is its spec.replicas (the autoscaler's count when it owns
	// it); replicas and updated are its pods, and those on the latest
	// template.
	desired, replicas, updated int32
	// stopped is the Deployment's own word that it cannot go on: a
	// rollout past its deadline, or pods it cannot create.
	stopped string
	// down are the pods not ready that restarted or have not been ready
	// for upgradeStopsAfter, each with why.
	down []string
}

// observeDeployment is observe for a store whose log is in PostgreSQL.
func (r *KeyValueStoreReconciler) observeDeployment(ctx context.Context, st *state) result {
	kvs := st.kvs
	kvs.Status.Membership = nil
	view := &deploymentView{}
	st.obs.deployment = view
	dep := &appsv1.Deployment{}
	// The cache holds only the operator's Deployments: one of the same
	// name that is not this store's is read around it, and reported
	// rather than taken over by an apply.
	key := types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.DeploymentName(kvs)}
	switch err := (cacheThenAPI{cached: r.Client, api: r.APIReader}).Get(ctx, key, dep); {
	case apierrors.IsNotFound(err):
		dep = nil
	case err != nil:
		return fail(err)
	case !metav1.IsControlledBy(dep, kvs):
		// Stop here, before any step: the client Service's selector and
		// an HPA would act on the other's pods too.
		st.taken = fmt.Sprintf("Deployment %s exists and does not belong to this store: the operator leaves it alone; delete it, or give the store another name", dep.Name)
		st.obs.invalid = st.taken
		return waitFor("%s", st.taken)
	}
	st.deployment = dep
	recorded, err := r.recordedClientAuth(ctx, kvs)
	if err != nil {
		return fail(err)
	}
	var template *corev1.PodTemplateSpec
	if dep != nil {
		template = &dep.Spec.Template
	}
	kvs.Status.ClientAuth = statefulset.ClientAuth(kvs, template, recorded)
	st.pods = int(kvs.Replicas())
	if h := hpa.Build(kvs, 0); h != nil {
		// The HPA decides the pod count, within its bounds.
		st.pods = int(*h.Spec.MinReplicas)
		if dep != nil && dep.Spec.Replicas != nil {
			st.pods = max(st.pods, int(*dep.Spec.Replicas))
		}
	}
	if dep == nil {
		return done()
	}
	view.exists = true
	view.current = dep.Status.ObservedGeneration >= dep.Generation
	view.desired = ptr.Deref(dep.Spec.Replicas, 1)
	view.replicas, view.updated = dep.Status.Replicas, dep.Status.UpdatedReplicas
	st.obs.pods, st.obs.readyPods = dep.Status.Replicas, dep.Status.ReadyReplicas
	for _, c := range dep.Status.Conditions {
		stalled := c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse
		failing := c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue
		if stalled || failing {
			view.stopped = fmt.Sprintf("Deployment %s: %s: %s", dep.Name, c.Reason, c.Message)
		}
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs))); err != nil {
		return fail(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || podReady(p) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue // going, serving, or no longer one of the Deployment's (evicted)
		}
		restarts := int32(0)
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		// A pod that has not restarted is on its way in until it is late
		// (an image pull, the startup probe), as in a Raft store's rollout;
		// one that restarted has failed at least once (PostgreSQL
		// unreachable, credentials refused).
		if restarts == 0 && r.Now().Sub(p.CreationTimestamp.Time) < upgradeStopsAfter {
			continue
		}
		view.down = append(view.down, fmt.Sprintf("%s (%s)", p.Name, podTrouble(p)))
	}
	sort.Strings(view.down)
	return done()
}

// syncDeployment applies the Deployment with spec.replicas pods (or no
// count, when the autoscaler owns it).
func (r *KeyValueStoreReconciler) syncDeployment(ctx context.Context, st *state) result {
	if st.taken != "" {
		// Nothing after this step may act on another's pods either (the
		// HPA would scale that Deployment).
		st.obs.invalid = st.taken
		return waitFor("%s", st.taken)
	}
	if why := statefulset.Refuse(st.kvs); why != "" {
		// The pods keep running as they are.
		st.obs.invalid = why
		return done()
	}
	var replicas *int32
	if !st.kvs.AutoscalingEnabled() {
		replicas = ptr.To(st.kvs.Replicas())
	}
	desired := deployment.Build(st.kvs, replicas)
	if st.deployment == nil && replicas == nil {
		// Autoscaled: created with the HPA's minimum rather than the
		// default of 1, as the StatefulSet is (syncStatefulSet).
		first := desired.DeepCopy()
		first.Spec.Replicas = ptr.To(int32(st.pods))
		if err := r.createAutoscaled(ctx, first, int32(st.pods)); err != nil {
			return fail(err)
		}
	}
	if st.deployment != nil && replicas == nil {
		if err := r.keepReplicas(ctx, st.deployment, ptr.Deref(st.deployment.Spec.Replicas, 1)); err != nil {
			return fail(err)
		}
	}
	if err := apply(ctx, r.Client, desired); err != nil {
		return fail(err)
	}
	// The status is of the Deployment as observed, before this apply: if
	// the apply changed its spec, its controller has not seen the change,
	// and the pods that are ready are the old template's. Read it again
	// (around the cache, which may not have the apply yet).
	fresh := &appsv1.Deployment{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), fresh); err != nil {
		return fail(err)
	}
	if v := st.obs.deployment; v != nil {
		v.current = v.current && fresh.Status.ObservedGeneration >= fresh.Generation
	}
	return done()
}

// setPostgresStatus is setStatus for a store whose log is in PostgreSQL:
// Ready once spec.replicas pods are ready on a Deployment whose
// controller has seen its latest spec. Nothing of Raft is reported: no
// voters, leader or members. The store is Creating until it is first
// Ready; after that, pods that are not ready are a planned change
// (Progressing: scaling, a rollout) until one of them restarts or is late,
// which is a fault (Degraded). Like setStatus, a pure function of its
// inputs, kvs.Status included.
func setPostgresStatus(kvs *kvv1.KeyValueStore, obs observation) {
	st := &kvs.Status
	want := kvs.Replicas()
	d := obs.deployment
	if d == nil {
		d = &deploymentView{}
	}
	st.Replicas, st.ReadyReplicas = obs.pods, obs.readyPods
	st.Ready = fmt.Sprintf("%d/%d", obs.readyPods, max(obs.pods, want))
	st.Voters, st.Leader, st.Members, st.Membership, st.Volumes = 0, "", nil, nil, nil
	st.Endpoint = kvv1.Endpoint(kvs)
	ready := d.exists && d.current && obs.readyPods >= want
	// Creating until the store was first Ready: never Creating again after.
	c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
	creating := !ready && (c == nil || c.Reason == kvv1.ReasonCreating)
	// A rollout: pods on an older template are still there. Scaling: the
	// Deployment's controller has not caught up with its spec yet.
	rollout := d.exists && d.current && d.replicas > d.updated
	scaling := d.exists && (!d.current || d.replicas != d.desired)
	st.Upgrade = nil
	if rollout {
		st.Upgrade = &kvv1.UpgradeStatus{Updated: fmt.Sprintf("%d/%d", d.updated, d.replicas), TargetImage: kvs.Spec.Image}
	}
	pods := fmt.Sprintf("%d/%d pods ready", obs.readyPods, want)
	if len(d.down) > 0 {
		pods += ", not ready: " + strings.Join(d.down, ", ")
	}
	cond := conditions(kvs)
	switch {
	case ready:
		where := ""
		if pg := kvs.Spec.Log.Postgres; pg != nil {
			where = fmt.Sprintf(", the log in PostgreSQL database %s on %s", pg.Database, pg.Host)
		}
		cond(kvv1.ConditionReady, true, kvv1.ReasonAvailable, pods+where)
	case creating:
		cond(kvv1.ConditionReady, false, kvv1.ReasonCreating, orDefault(obs.waiting, "waiting for the pods: "+pods))
	default:
		cond(kvv1.ConditionReady, false, kvv1.ReasonPodsNotReady, pods)
	}
	progressing := obs.waiting != "" || rollout || scaling || !ready
	switch {
	case kvs.Spec.Paused:
		cond(kvv1.ConditionProgressing, false, kvv1.ReasonPaused, "spec.paused is true: no changes are made")
	case obs.waiting != "":
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonWaitingForPods, obs.waiting)
	case rollout:
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonUpgrading, "updated "+st.Upgrade.Updated+" pods to the new template")
	case !ready:
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonWaitingForPods, "waiting for the pods: "+pods)
	case scaling:
		cond(kvv1.ConditionProgressing, true, kvv1.ReasonScaling, fmt.Sprintf("scaling to %d pods (%d now)", d.desired, d.replicas))
	default:
		cond(kvv1.ConditionProgressing, false, kvv1.ReasonStable, "the store is as specified")
	}
	switch {
	case obs.err != nil:
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonReconcileFailed, obs.err.Error())
	case obs.invalid != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonInvalidSpec, obs.invalid)
	case d.stopped != "":
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonRolloutStopped, d.stopped)
	case !ready && len(d.down) > 0:
		cond(kvv1.ConditionDegraded, true, kvv1.ReasonPodsNotReady, "the store serves with fewer ready pods than specified: "+pods)
	default:
		cond(kvv1.ConditionDegraded, false, kvv1.ReasonHealthy, "")
	}
	switch {
	case kvs.Spec.Paused:
		st.Phase = kvv1.PhasePaused
	case obs.err != nil || meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionDegraded):
		st.Phase = kvv1.PhaseDegraded
	case creating:
		st.Phase = kvv1.PhaseCreating
	case rollout:
		st.Phase = kvv1.PhaseUpgrading
	case progressing:
		st.Phase = kvv1.PhaseScaling
	default:
		st.Phase = kvv1.PhaseRunning
	}
	if obs.err == nil {
		st.ObservedGeneration = kvs.Generation
	}
}
