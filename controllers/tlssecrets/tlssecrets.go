// Package tlssecrets issues and renews the certificates of a
// KeyValueStore: a CA kept in its own Secret (only the operator reads its
// key), the Secret the pods mount (the CA certificate, the server
// certificate with the Service and pod DNS names, the peer certificate),
// the operator's admin client certificate, and a certificate for each
// client in spec.clients.
package tlssecrets

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// Keys of the Secrets.
const (
	CACert   = "ca.crt"
	CAKey    = "ca.key"
	TLSCert  = "tls.crt"
	TLSKey   = "tls.key"
	PeerCert = "peer.crt"
	PeerKey  = "peer.key"
	// AdminCN is the common name kvnodes require of the membership API's caller.
	AdminCN = "kvstore-admin"
	// caLifetime is long: rotating a CA means re-trusting every client.
	caLifetime = 10 * 365 * 24 * time.Hour
)

// DNSNames are the names the server and peer certificates cover: the
// client Service and every member through the headless Service.
func DNSNames(kvs *kvv1.KeyValueStore) []string {
	var names []string
	for _, svc := range []string{kvv1.ClientServiceName(kvs), "*." + kvv1.HeadlessServiceName(kvs), kvv1.HeadlessServiceName(kvs)} {
		names = append(names, svc, svc+"."+kvs.Namespace, svc+"."+kvs.Namespace+".svc", svc+"."+kvs.Namespace+".svc.cluster.local")
	}
	return append(names, "localhost")
}

// NeedsRenewal reports whether the certificate in pemData must be
// (re)issued at now: missing, unparsable, or past renewAtPercent of its
// lifetime. It also returns the certificate's expiry.
func NeedsRenewal(pemData []byte, renewAtPercent int32, now time.Time) (bool, time.Time) {
	b, _ := pem.Decode(pemData)
	if b == nil {
		return true, time.Time{}
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return true, time.Time{}
	}
	life := c.NotAfter.Sub(c.NotBefore)
	renewAt := c.NotBefore.Add(life * time.Duration(renewAtPercent) / 100)
	return !now.Before(renewAt), c.NotAfter
}

// BuildCA returns the CA Secret, issuing a new CA unless existing holds one.
func BuildCA(kvs *kvv1.KeyValueStore, existing *corev1.Secret, now time.Time) (*corev1.Secret, *certs.CA, error) {
	if existing != nil {
		if ca, err := certs.ParseCA(existing.Data[CACert], existing.Data[CAKey]); err == nil {
			return secret(kvs, kvv1.CASecretName(kvs), existing.Data), ca, nil
		}
	}
	ca, err := certs.NewCA(fmt.Sprintf("kvstore %s/%s CA", kvs.Namespace, kvs.Name), caLifetime, now)
	if err != nil {
		return nil, nil, err
	}
	return secret(kvs, kvv1.CASecretName(kvs), map[string][]byte{CACert: ca.CertPEM, CAKey: ca.KeyPEM}), ca, nil
}

// BuildServing returns the Secret the pods mount, issued by ca.
func BuildServing(kvs *kvv1.KeyValueStore, ca *certs.CA, now time.Time) (*corev1.Secret, error) {
	life := Lifetime(kvs)
	leaf := certs.Leaf{CommonName: kvs.Name, DNSNames: DNSNames(kvs), IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Lifetime: life}
	tlsCert, tlsKey, err := ca.Issue(leaf, now)
	if err != nil {
		return nil, err
	}
	leaf.Client = true // members are clients of each other on the peer port
	// A name no store can have (names have no spaces): a store named like
	// the admin's common name would otherwise make its members admins,
	// and the kvnodes refuse the admin's name as a peer.
	leaf.CommonName = kvs.Name + " peer"
	peerCert, peerKey, err := ca.Issue(leaf, now)
	if err != nil {
		return nil, err
	}
	return secret(kvs, kvv1.TLSSecretName(kvs), map[string][]byte{
		CACert: ca.CertPEM, TLSCert: tlsCert, TLSKey: tlsKey, PeerCert: peerCert, PeerKey: peerKey,
	}), nil
}

// BuildAdmin returns the operator's client certificate for the membership API.
func BuildAdmin(kvs *kvv1.KeyValueStore, ca *certs.CA, now time.Time) (*corev1.Secret, error) {
	life := Lifetime(kvs)
	c, k, err := ca.Issue(certs.Leaf{CommonName: AdminCN, Client: true, Lifetime: life}, now)
	if err != nil {
		return nil, err
	}
	return secret(kvs, kvv1.AdminSecretName(kvs), map[string][]byte{CACert: ca.CertPEM, TLSCert: c, TLSKey: k}), nil
}

// BuildClient returns client's certificate Secret, issued by ca. issuedAfter
// is kept from the client's earlier Secret; zero for a new client, which
// then gets its first certificate's NotBefore (see
// kvv1.AnnotationClientIssuedAfter).
func BuildClient(kvs *kvv1.KeyValueStore, ca *certs.CA, client string, issuedAfter, now time.Time) (*corev1.Secret, error) {
	c, k, err := ca.Issue(certs.Leaf{CommonName: access.CommonName(client), Client: true, Lifetime: Lifetime(kvs)}, now)
	if err != nil {
		return nil, err
	}
	if issuedAfter.IsZero() {
		b, _ := pem.Decode(c)
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		issuedAfter = leaf.NotBefore
	}
	s := secret(kvs, kvv1.ClientSecretName(kvs, client), map[string][]byte{CACert: ca.CertPEM, TLSCert: c, TLSKey: k})
	s.Labels[kvv1.LabelClient] = client
	s.Annotations = map[string]string{kvv1.AnnotationClientIssuedAfter: issuedAfter.UTC().Format(time.RFC3339)}
	return s, nil
}

// IssuedAfter reads kvv1.AnnotationClientIssuedAfter of a client's Secret;
// zero when it is missing or unreadable.
func IssuedAfter(s *corev1.Secret) time.Time {
	if s == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s.Annotations[kvv1.AnnotationClientIssuedAfter])
	if err != nil {
		return time.Time{}
	}
	return t
}

// Lifetime is spec.tls.certificateLifetime with its default.
func Lifetime(kvs *kvv1.KeyValueStore) time.Duration {
	if l := kvs.Spec.TLS.CertificateLifetime; l != nil && l.Duration > 0 {
		return l.Duration
	}
	return 90 * 24 * time.Hour
}

func secret(kvs *kvv1.KeyValueStore, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: kvv1.ChildMeta(kvs, name),
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}
