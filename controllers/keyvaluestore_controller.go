package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/clientaccess"
	"github.com/kvstore-operator/kvstore-operator/controllers/hpa"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
	"github.com/kvstore-operator/kvstore-operator/controllers/opmetrics"
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
	// APIReader reads around the cache, which holds only what the operator
	// made (CacheOptions): a user's TLS Secrets, Nodes, PersistentVolumes.
	// SetupWithManager sets it.
	APIReader client.Reader
	Recorder  EventRecorder
	// Now is the clock (certificate renewal); tests replace it.
	Now func() time.Time
	// Operator says which pods are the operator, for the NetworkPolicies.
	Operator clientaccess.Operator
	// NewMembershipClient connects to a cluster's kvnodes with the admin
	// certificate; tests replace it.
	NewMembershipClient func(kvs *kvv1.KeyValueStore, ca, cert, key []byte) (MembershipClient, error)
}

// SetupWithManager registers the reconciler and what it watches.
func (r *KeyValueStoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.NewMembershipClient == nil {
		r.NewMembershipClient = func(kvs *kvv1.KeyValueStore, ca, cert, key []byte) (MembershipClient, error) {
			return membership.NewClient(kvs, ca, cert, key)
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kvv1.KeyValueStore{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&batchv1.Job{}).
		// The pods belong to the StatefulSet (or the Deployment), not to
		// the store: found by their labels. Status names the leader and
		// counts ready members, which a pod deleted or turning ready
		// changes at once.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podStore), builder.WithPredicates(podChanged)).
		Named("keyvaluestore").
		WithOptions(controllerOptions(mgr, "keyvaluestore", "keyvaluestore")).
		Complete(r)
}

// podStore maps a kvnode pod to its store.
func podStore(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := kvv1.StoreOfPod(o.GetLabels())
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// podChanged passes the pod events that status depends on: created,
// deleted, terminating, running or not, ready or not. The others (a new
// container status, a restart count) would only add reconciles.
var podChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Pod)
		after, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return before.Status.Phase != after.Status.Phase || podReady(before) != podReady(after) ||
			(before.DeletionTimestamp == nil) != (after.DeletionTimestamp == nil)
	},
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kv.kvstore.dev,resources=keyvaluestores/scale,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=statefulsets;deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile brings one KeyValueStore's children to what its spec asks:
//
//  1. observe, changing nothing: the TLS Secrets, the StatefulSet, the
//     pods that run, the Raft configuration read from the members, and
//     from these the next membership step (membership.Plan);
//  2. run the steps in order, stopping at the first that must wait or
//     fails: TLS Secrets → client access → Services → restore →
//     volumes → StatefulSet → one membership step → replace → rollout →
//     PodDisruptionBudget → HorizontalPodAutoscaler → PodMonitor →
//     settled;
//  3. compute status from what was observed and patch it once.
//
// A store whose log is in PostgreSQL has steps of its own (steps,
// observeDeployment): a Deployment instead of the StatefulSet and nothing
// of Raft.
//
// With spec.paused the steps that change something are skipped (in one
// place, run); status is still refreshed.
func (r *KeyValueStoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kvs := &kvv1.KeyValueStore{}
	if err := r.Get(ctx, req.NamespacedName, kvs); err != nil {
		if apierrors.IsNotFound(err) {
			opmetrics.ForgetStore(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !kvs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // children go with their owner references
	}
	before := kvs.DeepCopy()
	st, res := r.run(ctx, kvs)
	obs := st.obs
	switch res.outcome {
	case requeue:
		obs.waiting = res.why
	case failed:
		obs.err = res.err
	}
	setStatus(kvs, obs)
	opmetrics.ObserveStore(kvs)
	if !equality.Semantic.DeepEqual(before.Status, kvs.Status) {
		if perr := r.Status().Patch(ctx, kvs, client.MergeFrom(before)); perr != nil {
			return ctrl.Result{}, errors.Join(res.err, perr)
		}
	}
	if res.err != nil {
		// Not logged here: controller-runtime logs the error it is given,
		// once, with the store's name, and requeues the store with a
		// backoff that doubles with each failure in a row
		// (controllerOptions). Logging it here as well would say
		// everything twice; returning nil with a requeue instead would
		// reset that backoff at every attempt.
		return ctrl.Result{}, res.err
	}
	switch {
	case obs.stepDone:
		// The next membership step is usually possible at once (a member
		// added can be promoted as soon as it has caught up).
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	case obs.step != "" || obs.waiting != "" || obs.blocked != "" || obs.mismatch != "" || obs.upgrade != "" || !meta.IsStatusConditionTrue(kvs.Status.Conditions, kvv1.ConditionReady):
		// Not Ready: members catch up and elect leaders with no event in
		// Kubernetes to say so, so Ready must be looked for soon, not at
		// the 30 s resync.
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
}

// outcome is how a step ended.
type outcome int

const (
	// proceed: the step is done; the next one runs.
	proceed outcome = iota
	// requeue: not ready yet. The reconcile stops here, records what it
	// waits for and comes back soon; this is not an error.
	requeue
	// failed: a real error; the reconcile stops and is retried with backoff.
	failed
)

// result is what a step returns.
type result struct {
	outcome outcome
	why     string // with requeue: what the reconcile waits for
	err     error  // with failed
}

func done() result { return result{} }

func waitFor(format string, args ...any) result {
	return result{outcome: requeue, why: fmt.Sprintf(format, args...)}
}

func fail(err error) result {
	if err == nil {
		return done()
	}
	return result{outcome: failed, err: err}
}

// state is what one reconcile knows: what observe saw, and what the steps
// made of it.
type state struct {
	kvs   *kvv1.KeyValueStore
	obs   observation
	certs tlssecrets.State
	// live is the StatefulSet as it is; nil before it exists.
	live *appsv1.StatefulSet
	// deployment is, with the log in PostgreSQL, the Deployment as it is;
	// nil before it exists. taken says why it is not the store's to apply
	// (one of its name that the store does not own), "" when it is.
	deployment *appsv1.Deployment
	taken      string
	// pods is how many pods should exist: spec.replicas, or the
	// autoscaler's count within its bounds.
	pods int
	// mc reaches the members; nil when no pod runs or no admin certificate exists yet.
	mc   MembershipClient
	plan membership.Observed
	step membership.Step
	// clusterID is the store's cluster ID as recorded or adopted; ""
	// while none is known.
	clusterID string
	// wait says what the bootstrap waits for.
	wait string
	// keep is how many pods the StatefulSet may have now (a scale-down
	// keeps the pods of members not yet removed).
	keep int
	// storage is each member's disk budget as it reported it.
	storage map[string]clusterapi.StorageStatus
	// volumeSize is the size the volumes are asked to have (the volumes
	// step decides it); zero before that step ran.
	volumeSize resource.Quantity
}

// step is one stage of the reconcile.
type step struct {
	name string
	// changes: the step writes to the cluster, so spec.paused skips it.
	changes bool
	run     func(context.Context, *state) result
}

// steps are run in this order (DESIGN §4).
func (r *KeyValueStoreReconciler) steps(kvs *kvv1.KeyValueStore) []step {
	if kvs.PostgresLog() {
		// PostgreSQL holds and orders the log: no membership, no volumes
		// to restore, grow or replace, and the Deployment controller rolls
		// the pods, which need no leader handed over.
		return []step{
			{"tls", true, r.syncTLS},
			{"access", true, r.syncAccess},
			{"services", true, r.syncServices},
			{"deployment", true, r.syncDeployment},
			{"pdb", true, r.syncPDB},
			{"hpa", true, r.syncHPA},
			{"podmonitor", true, r.syncPodMonitor},
		}
	}
	return []step{
		{"tls", true, r.syncTLS},
		{"access", true, r.syncAccess},
		{"services", true, r.syncServices},
		{"restore", true, r.syncRestore},
		{"volumes", true, r.syncVolumes},
		{"statefulset", true, r.syncStatefulSet},
		{"membership", true, r.stepMembership},
		{"replace", true, r.replaceUnschedulable},
		{"rollout", true, r.rollout},
		{"pdb", true, r.syncPDB},
		{"hpa", true, r.syncHPA},
		{"podmonitor", true, r.syncPodMonitor},
		{"settled", false, r.settled},
	}
}

// run observes, then runs the steps until one must wait or fails.
func (r *KeyValueStoreReconciler) run(ctx context.Context, kvs *kvv1.KeyValueStore) (*state, result) {
	st, res := r.observe(ctx, kvs)
	if st.mc != nil {
		defer st.mc.Close()
	}
	if res.outcome != proceed {
		if res.err != nil {
			opmetrics.ReconcileError("observe")
		}
		return st, res
	}
	for _, s := range r.steps(kvs) {
		if kvs.Spec.Paused && s.changes {
			continue
		}
		if res := s.run(ctx, st); res.outcome != proceed {
			if res.err != nil {
				opmetrics.ReconcileError(s.name)
				res.err = fmt.Errorf("%s: %w", s.name, res.err)
			}
			return st, res
		}
	}
	return st, done()
}

// observe reads everything the steps decide on and changes nothing.
func (r *KeyValueStoreReconciler) observe(ctx context.Context, kvs *kvv1.KeyValueStore) (*state, result) {
	st := &state{kvs: kvs, storage: map[string]clusterapi.StorageStatus{}, plan: membership.Observed{Voters: int(kvs.Voters()), Bootstrapped: kvs.Status.Bootstrapped, Leader: -1}}
	kvs.Status.Selector = labelSelector(kvv1.SelectorLabels(kvs))

	certs, err := tlssecrets.For(kvs).Read(ctx, r.secretReader(kvs), kvs, r.Now())
	if err != nil {
		return st, fail(err)
	}
	r.setCerts(st, certs)
	if certs.Waiting != "" {
		return st, waitFor("%s", certs.Waiting)
	}
	if kvs.PostgresLog() {
		return st, r.observeDeployment(ctx, st)
	}

	live := &appsv1.StatefulSet{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.StatefulSetName(kvs)}, live); err != nil {
		if !apierrors.IsNotFound(err) {
			return st, fail(err)
		}
		live = nil
	}
	st.live = live
	recorded, err := r.recordedClientAuth(ctx, kvs)
	if err != nil {
		return st, fail(err)
	}
	var template *corev1.PodTemplateSpec
	if live != nil {
		template = &live.Spec.Template
	}
	kvs.Status.ClientAuth = statefulset.ClientAuth(kvs, template, recorded)
	// The ID recorded on the StatefulSet outlives status (a store
	// re-applied from a manifest); status still holds it for a store made
	// before the annotation existed.
	if live != nil {
		st.plan.ClusterID = live.Annotations[kvv1.AnnotationClusterID]
	}
	if st.plan.ClusterID == "" {
		st.plan.ClusterID = kvs.Status.ClusterID
	}
	st.pods = int(kvs.Voters())
	if h := hpa.Build(kvs, 0); h != nil {
		// The HPA decides the pod count, within its bounds.
		st.pods = int(*h.Spec.MinReplicas)
		if live != nil && live.Spec.Replicas != nil {
			st.pods = max(st.pods, int(*live.Spec.Replicas))
		}
	}
	st.plan.Pods = st.pods
	if live != nil {
		st.obs.pods, st.obs.readyPods = live.Status.Replicas, live.Status.ReadyReplicas
		if live.Spec.Replicas != nil {
			// The plan may shrink below this only on the leader's view.
			st.plan.Current = int(*live.Spec.Replicas)
		}
	}

	running, err := r.runningPods(ctx, kvs)
	if err != nil {
		return st, fail(err)
	}
	if live == nil && len(running) > 0 {
		// The StatefulSet is gone while its pods run (made again with
		// larger claim templates, or deleted by a person): the one made
		// next must not start below the pods there are, which it would
		// delete at once, members or not, and without the leader's view
		// the plan may not shrink below them either.
		highest := running[len(running)-1] + 1
		st.plan.Current = highest
		if kvs.AutoscalingEnabled() {
			st.pods = max(st.pods, highest)
			st.plan.Pods = st.pods
		}
	}
	recoverFrom, annotated := kvs.Annotations[kvv1.AnnotationRecoverFrom]
	if !annotated {
		kvs.Status.RecoveredFrom = ""
	}
	if admin := certs.Admin; len(running) > 0 && admin != nil {
		st.mc, err = r.NewMembershipClient(kvs, admin.Data[tlssecrets.CACert], admin.Data[tlssecrets.TLSCert], admin.Data[tlssecrets.TLSKey])
		if err != nil {
			return st, fail(err)
		}
		highest := st.pods
		for _, o := range running {
			highest = max(highest, o+1)
		}
		seen := st.mc.Observe(ctx, highest, 1000)
		// Members and Leader are set only when the leader itself answered.
		st.plan.Running, st.plan.Members, st.plan.Leader = seen.Running, seen.Members, seen.Leader
		st.plan.Reports = seen.Reports
		var survivor int
		st.obs.quorumLost, survivor = membership.QuorumLoss(seen, func(i int) string { return kvv1.PodName(kvs, i) })
		st.plan.QuorumLost = st.obs.quorumLost
		// The annotation acts once per value, and only on the survivor
		// that holds the most: a person's decision, not a leftover's.
		switch o, valid := kvv1.PodOrdinal(kvs, recoverFrom); {
		case st.obs.quorumLost == "" || !annotated:
		case recoverFrom == kvs.Status.RecoveredFrom:
			st.obs.quorumLost += fmt.Sprintf("; the %s annotation was acted on before: remove it and set it again to recover again", kvv1.AnnotationRecoverFrom)
		case !valid || o != survivor:
			st.obs.quorumLost += fmt.Sprintf("; the %s annotation names %q, which is not the most up-to-date survivor: nothing is done", kvv1.AnnotationRecoverFrom, recoverFrom)
		default:
			st.plan.RecoverFrom = &o
		}
		if st.obs.quorumLost != "" {
			// One event per change, not one per reconcile.
			if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded); c == nil || c.Reason != kvv1.ReasonQuorumLost || c.Message != st.obs.quorumLost {
				r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonQuorumLost, "CheckQuorum", st.obs.quorumLost)
			}
		}
		// Only a leader that answered as such, from a pod that runs: a
		// follower names the old leader until the next election, also
		// when that leader's pod is gone.
		if seen.Leader >= 0 && slices.Contains(running, seen.Leader) {
			st.obs.leader = kvv1.PodName(kvs, seen.Leader)
		}
		if view := seen.View; view != nil {
			st.obs.reachable = true
			for _, m := range view.Members {
				if s := m.Status; s != nil && s.Storage != nil {
					st.storage[m.ID] = *s.Storage
				}
				if s := m.Status; s != nil && s.Storage != nil && s.Storage.Full {
					st.obs.storageFull = append(st.obs.storageFull, fmt.Sprintf("%s (%d of %d bytes free, %d reserved)", m.ID, s.Storage.FreeBytes, s.Storage.CapacityBytes, s.Storage.ReserveBytes))
				}
				st.obs.members = append(st.obs.members, kvv1.MemberStatus{Name: m.ID, Role: m.Role, Healthy: m.Healthy})
				if m.Role == clusterapi.RoleVoter {
					st.obs.voters++
				}
			}
		}
	}
	d := membership.Plan(st.plan)
	st.step, st.keep, st.obs.blocked = d.Step, d.Keep, d.Blocked
	st.clusterID, st.obs.clusterID, st.wait = d.ClusterID, d.ClusterID, d.Waiting
	if d.Bootstrapped && !kvs.Status.Bootstrapped {
		// The pods' volumes hold a cluster the store has no record of (made
		// before a crash, or status lost with a re-applied manifest): it is
		// this store's, and a bootstrap would start a second, empty one.
		kvs.Status.Bootstrapped = true
		r.event(kvs, corev1.EventTypeNormal, kvv1.ReasonClusterAdopted, "Adopt", fmt.Sprintf("the pods' volumes hold cluster %q: taken as this store's cluster instead of bootstrapping a new one", d.ClusterID))
	}
	if m := d.Mismatch; m != nil {
		st.obs.blocked = ""
		st.obs.mismatch = mismatchMessage(kvs, *m)
		// One event per mismatch, not one per reconcile.
		if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded); c == nil || c.Reason != kvv1.ReasonClusterIDMismatch || c.Message != st.obs.mismatch {
			r.event(kvs, corev1.EventTypeWarning, kvv1.ReasonClusterIDMismatch, "CheckClusterID", st.obs.mismatch)
		}
	}
	if st.step.Action != "" {
		st.obs.step = fmt.Sprintf("%s %s", st.step.Action, kvv1.PodName(kvs, st.step.Ordinal))
	} else {
		kvs.Status.Membership = nil
	}
	return st, done()
}

// mismatchMessage names the pod that reports another cluster and both IDs.
func mismatchMessage(kvs *kvv1.KeyValueStore, m membership.Mismatch) string {
	const stop = "no membership change is made until the pod's volume is checked"
	if m.ExpectedFrom < 0 {
		return fmt.Sprintf("pod %s reports cluster ID %q, but this store's cluster is %q (annotation %s on the StatefulSet, or status.clusterID): %s",
			kvv1.PodName(kvs, m.Ordinal), m.Reported, m.Expected, kvv1.AnnotationClusterID, stop)
	}
	return fmt.Sprintf("pod %s reports cluster ID %q, but pod %s reports %q: %s",
		kvv1.PodName(kvs, m.Ordinal), m.Reported, kvv1.PodName(kvs, m.ExpectedFrom), m.Expected, stop)
}

// recordedClientAuth is the client authentication recorded with the
// store's access rules (clientaccess.ModeKey), "" when there is none.
func (r *KeyValueStoreReconciler) recordedClientAuth(ctx context.Context, kvs *kvv1.KeyValueStore) (string, error) {
	rules := &corev1.ConfigMap{}
	switch err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.AccessConfigMapName(kvs)}, rules); {
	case err == nil && metav1.IsControlledBy(rules, kvs):
		return rules.Data[clientaccess.ModeKey], nil
	case err != nil && !apierrors.IsNotFound(err):
		return "", err
	}
	return "", nil
}

// setCerts records what the TLS provider found.
func (r *KeyValueStoreReconciler) setCerts(st *state, certs tlssecrets.State) {
	st.certs = certs
	if !certs.NotAfter.IsZero() {
		st.kvs.Status.CertificateNotAfter = ptr.To(metav1.NewTime(certs.NotAfter))
	}
}

// syncTLS issues and renews the certificates (tlssecrets decides what is due).
func (r *KeyValueStoreReconciler) syncTLS(ctx context.Context, st *state) result {
	certs, err := tlssecrets.For(st.kvs).Sync(ctx, r.secretReader(st.kvs), func(ctx context.Context, o client.Object) error { return apply(ctx, r.Client, o) }, st.kvs, r.Now())
	if err != nil {
		return fail(err)
	}
	if certs.Renewed {
		r.event(st.kvs, corev1.EventTypeNormal, "CertificateRenewed", "RenewCertificate", "renewed the server and peer certificates in Secret "+kvv1.TLSSecretName(st.kvs))
	}
	if certs.AnsweredRenewal != "" {
		st.kvs.Status.CertificatesRenewedFor = certs.AnsweredRenewal
	}
	r.setCerts(st, certs)
	if certs.Waiting != "" {
		return waitFor("%s", certs.Waiting)
	}
	return done()
}

// secretReader is where the store's TLS Secrets are read: the operator's
// own are labelled and cached; a user's (spec.tls.secretName) carry no
// label of ours, so the cache never holds them.
func (r *KeyValueStoreReconciler) secretReader(kvs *kvv1.KeyValueStore) client.Reader {
	if kvs.Spec.TLS.SecretName != nil && *kvs.Spec.TLS.SecretName != "" && r.APIReader != nil {
		return r.APIReader
	}
	// A client's Secret name may be taken by a Secret the operator did
	// not make, which the cache does not hold (tlssecrets refuses it).
	return cacheThenAPI{cached: r.Client, api: r.APIReader}
}

// syncServices applies the client Service and, for a Raft log, the
// headless one the members find each other by; the pods of a store whose
// log is in PostgreSQL never call each other.
func (r *KeyValueStoreReconciler) syncServices(ctx context.Context, st *state) result {
	svcs := []*corev1.Service{services.BuildClient(st.kvs)}
	if !st.kvs.PostgresLog() {
		svcs = append([]*corev1.Service{services.BuildHeadless(st.kvs)}, svcs...)
	}
	for _, s := range svcs {
		if err := apply(ctx, r.Client, s); err != nil {
			return fail(err)
		}
	}
	return done()
}

// syncStatefulSet applies the StatefulSet with the pod count the
// membership plan allows (or none, when the autoscaler owns it).
func (r *KeyValueStoreReconciler) syncStatefulSet(ctx context.Context, st *state) result {
	if why := statefulset.Refuse(st.kvs); why != "" {
		// The pods keep running as they are, and the membership steps
		// still follow the pods there are.
		st.obs.invalid = why
		return done()
	}
	var replicas *int32
	if !st.kvs.AutoscalingEnabled() {
		replicas = ptr.To(int32(st.keep))
	}
	if st.live != nil && st.live.DeletionTimestamp != nil {
		// Deleted with its pods orphaned, to be made again with larger
		// claim templates (syncVolumes): applying now would write to the
		// object on its way out.
		return waitFor("the StatefulSet is being re-created with the new volume size")
	}
	desired := statefulset.Build(st.kvs, replicas)
	if !st.volumeSize.IsZero() {
		// Members added later get what the others have, autoExpand included.
		desired.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage] = st.volumeSize.DeepCopy()
	}
	if st.clusterID != "" {
		// Recorded where a store re-applied without status still finds it;
		// applied with every reconcile so that the apply keeps owning it.
		if desired.Annotations == nil {
			desired.Annotations = map[string]string{}
		}
		desired.Annotations[kvv1.AnnotationClusterID] = st.clusterID
	}
	statefulset.KeepClaimTemplates(desired, st.live)
	if st.live == nil && replicas == nil {
		// Autoscaled: the HPA owns the count. The StatefulSet is created
		// with it (st.pods, at least the pods that run) rather than with
		// the default of 1, which the StatefulSet controller could act on
		// before the count is set, deleting running pods.
		first := desired.DeepCopy()
		first.Spec.Replicas = ptr.To(int32(st.pods))
		if err := r.createAutoscaled(ctx, first, int32(st.pods)); err != nil {
			return fail(err)
		}
	}
	if st.live != nil && replicas == nil {
		if err := r.keepReplicas(ctx, st.live, ptr.Deref(st.live.Spec.Replicas, 1)); err != nil {
			return fail(err)
		}
	}
	if err := apply(ctx, r.Client, desired); err != nil {
		return fail(err)
	}
	return done()
}

// createAutoscaled creates first, a StatefulSet or Deployment whose count
// the HPA is to own, with count pods. The count is then held by a field
// owner of its own, and released by the operator's with the next apply
// (which leaves it out), so that the HPA can take it over.
func (r *KeyValueStoreReconciler) createAutoscaled(ctx context.Context, first client.Object, count int32) error {
	if err := apply(ctx, r.Client, first); err != nil {
		return err
	}
	kind := "StatefulSet"
	if _, ok := first.(*appsv1.Deployment); ok {
		kind = "Deployment"
	}
	initial := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": kind,
		"metadata": map[string]any{"name": first.GetName(), "namespace": first.GetNamespace()},
		"spec":     map[string]any{"replicas": int64(count)},
	}}
	return applyUnstructured(ctx, r.Client, initial, FieldOwner+"-initial-replicas")
}

// keepReplicas hands the live count of obj (a StatefulSet or Deployment
// the operator applied a count to, before autoscaling was turned on) to
// the field owner createAutoscaled uses, before the operator's next apply
// leaves the count out. Otherwise server-side apply would reset a count
// nobody else owns to its default, 1, until the HPA acts: pods, and for
// a Raft store voters, gone at once.
func (r *KeyValueStoreReconciler) keepReplicas(ctx context.Context, obj client.Object, live int32) error {
	owned := false
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == FieldOwner && mf.Operation == metav1.ManagedFieldsOperationApply && mf.FieldsV1 != nil && strings.Contains(mf.FieldsV1.GetRawString(), `"f:replicas"`) {
			owned = true
		}
	}
	if !owned {
		return nil
	}
	kind := "StatefulSet"
	if _, ok := obj.(*appsv1.Deployment); ok {
		kind = "Deployment"
	}
	initial := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": kind,
		"metadata": map[string]any{"name": obj.GetName(), "namespace": obj.GetNamespace()},
		"spec":     map[string]any{"replicas": int64(live)},
	}}
	return applyUnstructured(ctx, r.Client, initial, FieldOwner+"-initial-replicas")
}

// stepMembership makes the one membership step the plan chose, recording
// it in status first so that an operator restarted mid-step resumes it.
func (r *KeyValueStoreReconciler) stepMembership(ctx context.Context, st *state) result {
	s, kvs := st.step, st.kvs
	if s.Action == "" {
		return done()
	}
	member := kvv1.PodName(kvs, s.Ordinal)
	if m := kvs.Status.Membership; m == nil || m.Action != s.Action || m.Member != member {
		kvs.Status.Membership = &kvv1.MembershipStep{Action: s.Action, Member: member, Started: metav1.NewTime(r.Now())}
	}
	via := s.Ordinal
	if s.Action != kvv1.ActionBootstrap {
		if st.plan.Leader >= 0 {
			via = st.plan.Leader
		} else if len(st.plan.Running) > 0 {
			via = st.plan.Running[0]
		}
	}
	// The member's pod is the related object of the step's events: the
	// events API folds events that differ only in their note into one
	// series, which showed the second AddNonVoter as the first again.
	pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Namespace: kvs.Namespace, Name: member}}
	err := st.mc.Execute(ctx, s, via)
	opmetrics.MembershipStep(s.Action, err)
	if err != nil {
		st.obs.stepFailed = fmt.Sprintf("%s %s failed: %v", s.Action, member, err)
		// One event per failure that changes, not one per retry.
		if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded); c == nil || c.Reason != kvv1.ReasonMembershipStepFailed || c.Message != st.obs.stepFailed {
			r.eventAbout(kvs, pod, corev1.EventTypeWarning, kvv1.ReasonMembershipStepFailed, s.Action, st.obs.stepFailed)
		}
		// Not a reconcile error: the next reconcile plans again from what
		// it observes, which may be another step. Debug only: a member
		// still starting refuses, and is asked again in two seconds.
		log.FromContext(ctx).V(1).Info("membership step failed", "action", s.Action, "member", member, "error", err.Error())
		return waitFor("%s", st.obs.stepFailed)
	}
	// One line per change of the Raft configuration: what a person
	// reading the log after an incident wants, in order.
	log.FromContext(ctx).Info("membership step done", "action", s.Action, "member", member, "via", kvv1.PodName(kvs, via))
	if s.Action == kvv1.ActionBootstrap {
		kvs.Status.Bootstrapped = true
	}
	st.obs.stepDone = true
	reason := map[string]string{
		kvv1.ActionBootstrap: "Bootstrapped", kvv1.ActionAddNonVoter: "MemberAdded", kvv1.ActionPromote: "MemberPromoted",
		kvv1.ActionDemote: "MemberDemoted", kvv1.ActionRemove: "MemberRemoved", kvv1.ActionTransfer: "LeadershipTransferred",
		kvv1.ActionUpdateAddress: "MemberAddressUpdated", kvv1.ActionAdmit: "MemberAdmitted", kvv1.ActionRecover: "RecoveryStarted",
	}[s.Action]
	if s.Action == kvv1.ActionRecover {
		kvs.Status.RecoveredFrom = kvs.Annotations[kvv1.AnnotationRecoverFrom]
		var last uint64
		for _, rep := range st.plan.Reports {
			if rep.Ordinal == s.Ordinal {
				last = rep.LastIndex
			}
		}
		r.eventAbout(kvs, pod, corev1.EventTypeWarning, reason, s.Action, fmt.Sprintf("%s becomes the whole cluster at its last index %d: writes that other members committed after index %d are lost; the others join it again. Remove the %s annotation once the store is healthy", member, last, last, kvv1.AnnotationRecoverFrom))
		return done()
	}
	r.eventAbout(kvs, pod, corev1.EventTypeNormal, reason, s.Action, fmt.Sprintf("%s %s", s.Action, member))
	return done()
}

func (r *KeyValueStoreReconciler) syncPDB(ctx context.Context, st *state) result {
	return fail(apply(ctx, r.Client, pdb.Build(st.kvs)))
}

// syncHPA applies the autoscaler, or deletes it when autoscaling is off.
func (r *KeyValueStoreReconciler) syncHPA(ctx context.Context, st *state) result {
	floor := int32(0) // no voters to keep with the log in PostgreSQL
	if !st.kvs.PostgresLog() {
		floor = st.voterPods()
	}
	if h := hpa.Build(st.kvs, floor); h != nil {
		return fail(apply(ctx, r.Client, h))
	}
	err := r.Delete(ctx, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: st.kvs.Namespace, Name: kvv1.HPAName(st.kvs)}})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	return fail(err)
}

// settled waits, without changing anything, until the cluster has been
// bootstrapped and has all its voters.
func (r *KeyValueStoreReconciler) settled(_ context.Context, st *state) result {
	kvs := st.kvs
	if st.step.Action != "" {
		return done()
	}
	if !kvs.Status.Bootstrapped {
		if st.wait != "" {
			return waitFor("%s", st.wait)
		}
		return waitFor("waiting for pod %s to run", kvv1.PodName(kvs, 0))
	}
	if st.obs.voters < kvs.Voters() && st.obs.reachable {
		return waitFor("waiting for pods to run and catch up (%d/%d voters)", st.obs.voters, kvs.Voters())
	}
	return done()
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

func (r *KeyValueStoreReconciler) event(kvs *kvv1.KeyValueStore, typ, reason, action, note string) {
	r.eventAbout(kvs, nil, typ, reason, action, note)
}

// eventAbout records an event about kvs that concerns related (nil: none).
func (r *KeyValueStoreReconciler) eventAbout(kvs *kvv1.KeyValueStore, related runtime.Object, typ, reason, action, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(kvs, related, typ, reason, action, "%s", note)
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

// voterPods is how many pods, counted from ordinal 0, hold voters: the
// autoscaler may not go below it. Without the leader's configuration
// nothing says which pods hold voters, so it is every pod there is.
func (st *state) voterPods() int32 {
	if st.plan.Leader < 0 || len(st.plan.Members) == 0 {
		if st.live != nil && st.live.Spec.Replicas != nil {
			return *st.live.Spec.Replicas
		}
		return 0
	}
	n := 0
	for _, m := range st.plan.Members {
		if m.Voter {
			n = max(n, m.Ordinal+1)
		}
	}
	return int32(n)
}
