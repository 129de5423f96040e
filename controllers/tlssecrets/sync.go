package tlssecrets

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
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

func (u userSecret) Sync(ctx context.Context, c client.Reader, _ ApplyFunc, kvs *kvv1.KeyValueStore, now time.Time) (State, error) {
	return u.Read(ctx, c, kvs, now)
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
	if force {
		st.AnsweredRenewal = requested
	}
	st.Admin, st.NotAfter = admin, notAfter(serving)
	return st, nil
}

func data(s *corev1.Secret, key string) []byte {
	if s == nil {
		return nil
	}
	return s.Data[key]
}
