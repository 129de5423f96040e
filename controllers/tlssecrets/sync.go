package tlssecrets

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// ApplyFunc writes an object the package built (server-side apply with the
// operator's field owner).
type ApplyFunc func(ctx context.Context, obj client.Object) error

// State is what Read and Sync found or made.
type State struct {
	// Admin is the operator's client certificate for the membership API;
	// nil while it does not exist.
	Admin *corev1.Secret
	// NotAfter is the expiry of the pods' certificate; zero when unknown.
	NotAfter time.Time
	// Waiting says what is missing before the store can be served (a
	// user-provided Secret that does not exist yet); "" when nothing.
	Waiting string
	// Renewed: Sync replaced the pods' certificate (not a first issue).
	Renewed bool
	// AnsweredRenewal is the renewal request (the annotation's value) that
	// Sync answered; "" when it answered none.
	AnsweredRenewal string
	// CACert is the CA bundle the pods trust (ca.crt). Only Sync fills it.
	CACert []byte
	// Clients maps each client of spec.clients to the time its
	// certificates must be issued after (zero: any). Only Sync fills it.
	Clients map[string]time.Time
}

// Provider supplies a store's certificates. There are two: the operator's
// own CA (the default) and a Secret the user provides (spec.tls.secretName,
// e.g. from cert-manager), which the operator only reads.
type Provider interface {
	// Read returns the certificates as they are, changing nothing.
	Read(ctx context.Context, c client.Reader, kvs *kvv1.KeyValueStore, now time.Time) (State, error)
	// Sync issues what is missing and renews what is due, then returns
	// the certificates as they are afterwards.
	Sync(ctx context.Context, c client.Reader, apply ApplyFunc, kvs *kvv1.KeyValueStore, now time.Time) (State, error)
}

// For returns the provider that spec.tls selects.
func For(kvs *kvv1.KeyValueStore) Provider {
	if kvs.Spec.TLS.SecretName != nil && *kvs.Spec.TLS.SecretName != "" {
		return userSecret{}
	}
	return issued{}
}

// secrets are the store's TLS Secrets as they exist (nil when missing).
type secrets struct{ ca, serving, admin *corev1.Secret }

func get(ctx context.Context, c client.Reader, kvs *kvv1.KeyValueStore, withCA bool) (secrets, error) {
	one := func(name string) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		err := c.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: name}, s)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return s, err
	}
	var s secrets
	var err error
	if s.serving, err = one(kvv1.TLSSecretName(kvs)); err != nil {
		return s, err
	}
	if s.admin, err = one(kvv1.AdminSecretName(kvs)); err != nil {
		return s, err
	}
	if withCA {
		s.ca, err = one(kvv1.CASecretName(kvs))
	}
	return s, err
}

func notAfter(serving *corev1.Secret) time.Time {
	_, t := NeedsRenewal(data(serving, TLSCert), 100, time.Time{})
	return t
}

// userSecret reads the Secret named in spec.tls.secretName; the admin
// certificate must then be in a Secret named <name>-admin too.
type userSecret struct{}

func (userSecret) Read(ctx context.Context, c client.Reader, kvs *kvv1.KeyValueStore, _ time.Time) (State, error) {
	s, err := get(ctx, c, kvs, false)
	if err != nil {
		return State{}, err
	}
	if s.serving == nil || s.admin == nil {
		return State{Waiting: fmt.Sprintf("waiting for Secrets %s and %s", kvv1.TLSSecretName(kvs), kvv1.AdminSecretName(kvs))}, nil
	}
	return State{Admin: s.admin, NotAfter: notAfter(s.serving)}, nil
}

// Sync issues nothing: without the CA's key the operator cannot issue
// client certificates either; the user issues them (common name
// "client:<name>"), and the rules admit them from any time.
func (u userSecret) Sync(ctx context.Context, c client.Reader, _ ApplyFunc, kvs *kvv1.KeyValueStore, now time.Time) (State, error) {
	st, err := u.Read(ctx, c, kvs, now)
	if err != nil {
		return st, err
	}
	serving := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.TLSSecretName(kvs)}, serving); err == nil {
		st.CACert = serving.Data[CACert]
	}
	st.Clients = map[string]time.Time{}
	for _, cl := range kvs.Spec.Clients {
		st.Clients[cl.Name] = time.Time{}
	}
	return st, nil
}

// issued is the operator's own CA: issued once, kept in <name>-ca; the
// pods' and the admin certificates are renewed at spec.tls.renewAtPercent
// of their lifetime, when the CA changed, or on request (the
// AnnotationRenewCertificates annotation).
type issued struct{}

func (issued) Read(ctx context.Context, c client.Reader, kvs *kvv1.KeyValueStore, _ time.Time) (State, error) {
	s, err := get(ctx, c, kvs, false)
	if err != nil {
		return State{}, err
	}
	return State{Admin: s.admin, NotAfter: notAfter(s.serving)}, nil
}

func (issued) Sync(ctx context.Context, c client.Reader, apply ApplyFunc, kvs *kvv1.KeyValueStore, now time.Time) (State, error) {
	s, err := get(ctx, c, kvs, true)
	if err != nil {
		return State{}, err
	}
	caSecret, ca, err := BuildCA(kvs, s.ca, now)
	if err != nil {
		return State{}, err
	}
	if s.ca == nil || string(s.ca.Data[CAKey]) != string(caSecret.Data[CAKey]) {
		if err := apply(ctx, caSecret); err != nil {
			return State{}, err
		}
	}
	renew := kvs.Spec.TLS.RenewAtPercent
	if renew == 0 {
		renew = 67
	}
	serving, admin := s.serving, s.admin
	if serving != nil && string(serving.Data[CACert]) != string(ca.CertPEM) {
		serving = nil // issued by another CA: reissue
	}
	var st State
	requested := kvs.Annotations[kvv1.AnnotationRenewCertificates]
	// The Secret records the request it answered too: a reconcile that
	// reads a KeyValueStore from a cache not yet showing the new status
	// must not renew a second time.
	force := requested != "" && requested != kvs.Status.CertificatesRenewedFor && (serving == nil || serving.Annotations[kvv1.AnnotationRenewCertificates] != requested)
	if need, _ := NeedsRenewal(data(serving, TLSCert), renew, now); need || force {
		fresh, err := BuildServing(kvs, ca, now)
		if err != nil {
			return State{}, err
		}
		if requested != "" {
			fresh.Annotations = map[string]string{kvv1.AnnotationRenewCertificates: requested}
		}
		if err := apply(ctx, fresh); err != nil {
			return State{}, err
		}
		st.Renewed = serving != nil
		serving = fresh
	}
	if need, _ := NeedsRenewal(data(admin, TLSCert), renew, now); need || force || string(data(admin, CACert)) != string(ca.CertPEM) {
		fresh, err := BuildAdmin(kvs, ca, now)
		if err != nil {
			return State{}, err
		}
		if err := apply(ctx, fresh); err != nil {
			return State{}, err
		}
		admin = fresh
	}
	if st.Clients, err = syncClients(ctx, c, apply, kvs, ca, renew, force, now); err != nil {
		return State{}, err
	}
	if force {
		st.AnsweredRenewal = requested
	}
	st.Admin, st.NotAfter, st.CACert = admin, notAfter(serving), ca.CertPEM
	return st, nil
}

// syncClients issues and renews the certificate of every client in
// spec.clients, by the same rules as the pods' (due, CA changed, or
// renewal requested), keeping each client's issued-after time.
func syncClients(ctx context.Context, c client.Reader, apply ApplyFunc, kvs *kvv1.KeyValueStore, ca *certs.CA, renew int32, force bool, now time.Time) (map[string]time.Time, error) {
	out := make(map[string]time.Time, len(kvs.Spec.Clients))
	for _, cl := range kvs.Spec.Clients {
		cur := &corev1.Secret{}
		err := c.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvv1.ClientSecretName(kvs, cl.Name)}, cur)
		switch {
		case apierrors.IsNotFound(err):
			cur = nil
		case err != nil:
			return nil, err
		case !metav1.IsControlledBy(cur, kvs) || cur.Labels[kvv1.LabelClient] != cl.Name:
			// Not this store's client Secret (a user's object of the same
			// name, or a deleted store's): its time says nothing of this
			// client, and applying over it would take it over.
			return nil, fmt.Errorf("the Secret %s exists and is not this store's certificate of client %q: rename the client or delete the Secret", cur.Name, cl.Name)
		}
		after := IssuedAfter(cur)
		if need, _ := NeedsRenewal(data(cur, TLSCert), renew, now); need || force || after.IsZero() || string(data(cur, CACert)) != string(ca.CertPEM) {
			fresh, err := BuildClient(kvs, ca, cl.Name, after, now)
			if err != nil {
				return nil, err
			}
			if err := apply(ctx, fresh); err != nil {
				return nil, err
			}
			after = IssuedAfter(fresh)
		}
		out[cl.Name] = after
	}
	return out, nil
}

func data(s *corev1.Secret, key string) []byte {
	if s == nil {
		return nil
	}
	return s.Data[key]
}
