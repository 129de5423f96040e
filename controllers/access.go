package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/clientaccess"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// syncAccess publishes the CA bundle for clients, writes the access rules
// the pods enforce, deletes the certificates of clients no longer listed,
// and applies or removes the NetworkPolicy. It runs after the TLS step,
// which issued the client certificates the rules refer to.
func (r *KeyValueStoreReconciler) syncAccess(ctx context.Context, st *state) result {
	kvs := st.kvs
	if len(st.certs.CACert) > 0 {
		if err := r.applyOwned(ctx, kvs, clientaccess.CAConfigMap(kvs, st.certs.CACert), &corev1.ConfigMap{}); err != nil {
			return fail(err)
		}
	}
	rules, err := clientaccess.RulesConfigMap(kvs, kvs.Status.ClientAuth, st.certs.Clients)
	if err != nil {
		return fail(err)
	}
	if err := r.applyOwned(ctx, kvs, rules, &corev1.ConfigMap{}); err != nil {
		return fail(err)
	}
	if kvs.Status.ClientAuth != kvv1.ClientAuthMTLS && len(kvs.Spec.Clients) > 0 && kvs.Status.ObservedGeneration != kvs.Generation {
		r.event(kvs, corev1.EventTypeWarning, "ClientsNotEnforced", "CheckClientAuth",
			"spec.clients lists clients, but this store does not require client certificates (it ran without them before spec.clientAuth existed): set spec.clientAuth: mtls to enforce them")
	}
	if err := r.pruneClientSecrets(ctx, kvs); err != nil {
		return fail(err)
	}
	if np := kvs.Spec.NetworkPolicy; np != nil && np.Enabled {
		if err := r.applyOwned(ctx, kvs, clientaccess.NetworkPolicy(kvs, r.Operator), &networkingv1.NetworkPolicy{}); err != nil {
			return fail(err)
		}
		return done()
	}
	live := &networkingv1.NetworkPolicy{}
	err = r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.NetworkPolicyName(kvs)}, live)
	switch {
	case apierrors.IsNotFound(err):
		return done()
	case err != nil:
		return fail(err)
	case metav1.IsControlledBy(live, kvs):
		return fail(client.IgnoreNotFound(r.Delete(ctx, live)))
	}
	return done()
}

// applyOwned applies obj unless an object of its name exists that this
// store does not control (a user's, another store's): apply takes fields
// over by force, and would rewrite it and make it the store's, to be
// deleted with it. live is an empty object of obj's type.
func (r *KeyValueStoreReconciler) applyOwned(ctx context.Context, kvs *kvv1.KeyValueStore, obj, live client.Object) error {
	err := cacheThenAPI{cached: r.Client, api: r.APIReader}.Get(ctx, client.ObjectKeyFromObject(obj), live)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case !metav1.IsControlledBy(live, kvs):
		return fmt.Errorf("%s %s exists and is not this store's: rename or delete it", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName())
	}
	return apply(ctx, r.Client, obj)
}

// pruneClientSecrets deletes this store's client certificates whose client
// spec.clients no longer lists: the rules refuse them already, and a key
// nobody uses should not lie around.
func (r *KeyValueStoreReconciler) pruneClientSecrets(ctx context.Context, kvs *kvv1.KeyValueStore) error {
	var list corev1.SecretList
	if err := r.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels(kvv1.SelectorLabels(kvs)), client.HasLabels{kvv1.LabelClient}); err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, c := range kvs.Spec.Clients {
		listed[kvv1.ClientSecretName(kvs, c.Name)] = true
	}
	for i := range list.Items {
		s := &list.Items[i]
		if listed[s.Name] || !metav1.IsControlledBy(s, kvs) {
			continue
		}
		if err := client.IgnoreNotFound(r.Delete(ctx, s, client.Preconditions{UID: &s.UID})); err != nil {
			return fmt.Errorf("delete the certificate of removed client %s: %w", s.Labels[kvv1.LabelClient], err)
		}
		r.event(kvs, corev1.EventTypeNormal, "ClientRemoved", "DeleteSecret", fmt.Sprintf("client %q is no longer in spec.clients: deleted its certificate Secret %s", s.Labels[kvv1.LabelClient], s.Name))
	}
	return nil
}
