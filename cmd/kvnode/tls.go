package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/rest"
)

// tlsSetup is the node's TLS material: the API's server configuration, the
// client that calls other members' APIs, the peer (Raft) configuration,
// and who may use the membership API and the internal calls.
type tlsSetup struct {
	scheme    string
	server    *tls.Config
	apiClient *http.Client
	peer      *tls.Config
	adminCN   string
	// peerDomain is --peer-domain: the hosts a peer certificate must name.
	peerDomain string
	// guard enforces --client-auth=mtls on the client API; nil with none.
	guard rest.Guard
	// apiCerts holds --tls-cert and --tls-ca, peerCerts the --peer-tls-*
	// files; nil when not given.
	apiCerts, peerCerts *certs.Reloader
	closers             []func()
}

func setupTLS(cfg *config, logger *slog.Logger) (*tlsSetup, error) {
	s := &tlsSetup{scheme: "http", adminCN: cfg.AdminCN, peerDomain: cfg.PeerDomain}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}
	s.apiClient = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	if cfg.PeerCert != "" {
		r, err := certs.NewReloader(cfg.PeerCert, cfg.PeerKey, cfg.PeerCA, cfg.TLSReload, logger)
		if err != nil {
			return nil, fmt.Errorf("peer TLS: %w", err)
		}
		s.closers = append(s.closers, r.Close)
		// The Raft port asks of a caller what the internal API asks: a
		// peer certificate, not merely any certificate of the CA.
		if s.peer, err = r.MutualConfig("", s.peerIdentity); err != nil {
			s.close()
			return nil, err
		}
		s.peerCerts = r
	}
	if cfg.TLSCert != "" {
		r, err := certs.NewReloader(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, cfg.TLSReload, logger)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		s.closers = append(s.closers, r.Close)
		s.apiCerts = r
		// Client certificates chained to either CA pass the handshake: the
		// admin's to --tls-ca, the members' to --peer-tls-ca. Each API then
		// checks the CA and the identity it requires.
		s.server, s.scheme = r.ServerConfig(s.peerCerts), "https"
		if cfg.TLSCA != "" {
			// Members call each other's internal API with their peer
			// certificate, the identity that API requires.
			transport.TLSClientConfig = r.ClientConfig(s.peerCerts)
		}
	}
	if cfg.ClientAuth == access.ModeMTLS {
		// validate made sure of --tls-ca, so apiCerts has a pool.
		p, err := access.LoadPolicy(cfg.ClientsFile, s.apiCerts.Pool, cfg.TLSReload, logger)
		if err != nil {
			s.close()
			return nil, err
		}
		s.closers = append(s.closers, p.Close)
		s.guard = p
	}
	return s, nil
}

func (s *tlsSetup) close() {
	for _, c := range s.closers {
		c()
	}
}

// fromLoopback reports whether r comes from this host.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

// verifiedClient returns the client certificate of r when it chains to
// the current CA of ca for client authentication.
func verifiedClient(r *http.Request, ca *certs.Reloader) (*x509.Certificate, error) {
	if len(r.TLS.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate")
	}
	if ca == nil || ca.Pool() == nil {
		return nil, errors.New("this node has no CA to verify client certificates against")
	}
	leaf := r.TLS.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: ca.Pool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range r.TLS.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, err
	}
	return leaf, nil
}

// authorizeAdmin lets a request use the membership API when it presents a
// client certificate, verified against the cluster CA (--tls-ca), whose
// common name is the admin's. A node without TLS (development) accepts
// only loopback callers.
func (s *tlsSetup) authorizeAdmin(r *http.Request) error {
	if r.TLS == nil {
		if fromLoopback(r) {
			return nil
		}
		return errors.New("the membership API needs TLS with an admin client certificate (plain HTTP: loopback only)")
	}
	// Verified here, not only in the handshake: the handshake also accepts
	// certificates from the peer CA, which may be another one.
	leaf, err := verifiedClient(r, s.apiCerts)
	if err != nil {
		return fmt.Errorf("the membership API needs a client certificate signed by the cluster CA: %v", err)
	}
	if cn := leaf.Subject.CommonName; cn != s.adminCN {
		return fmt.Errorf("client certificate %q is not the admin's", cn)
	}
	// The admin's certificate is a client certificate only. One that may
	// also serve is a pod's: whatever its name (a store named like the
	// admin, a user's Secret with odd names), it is not the admin.
	if serverUsage(leaf) {
		return fmt.Errorf("certificate %q may serve TLS: a pod's certificate, not the admin's", leaf.Subject.CommonName)
	}
	return nil
}

// authorizePeer lets a request make the calls members make to each other
// (clusterapi.PathInternal: propose, read index, status) only when it
// comes from a member. A member is recognised by its peer certificate,
// the one it presents on the Raft port: a client certificate that chains
// to --peer-tls-ca and is a server certificate too (a peer certificate
// serves the Raft port as well as dialling it; the admin's certificate and
// any other client-only certificate from the same CA is not one), and is
// not the admin's. A node without a peer identity to check, plain HTTP or
// no --peer-tls-* (development), accepts only loopback callers.
func (s *tlsSetup) authorizePeer(r *http.Request) error {
	if r.TLS == nil || s.peerCerts == nil {
		if fromLoopback(r) {
			return nil
		}
		return errors.New("the internal API is for cluster members: without TLS and a peer certificate it serves loopback callers only")
	}
	leaf, err := verifiedClient(r, s.peerCerts)
	if err != nil {
		return fmt.Errorf("the internal API is for cluster members: it needs the peer certificate: %v", err)
	}
	if err := s.peerIdentity(leaf); err != nil {
		return fmt.Errorf("the internal API is for cluster members: %w", err)
	}
	return nil
}

// peerIdentity tells a peer certificate from the other certificates a
// cluster CA issues: a peer's serves (the Raft port) as well as dials, and
// is not the admin's. The internal API and the Raft port both ask it.
func (s *tlsSetup) peerIdentity(leaf *x509.Certificate) error {
	if !serverUsage(leaf) {
		return fmt.Errorf("client certificate %q is not a peer certificate (not a server certificate too)", leaf.Subject.CommonName)
	}
	if leaf.Subject.CommonName == s.adminCN {
		return errors.New("the admin certificate is not a peer certificate")
	}
	if s.peerDomain != "" && !namesHostIn(leaf, s.peerDomain) {
		return fmt.Errorf("peer certificate %q names no host in %s: it is not one of this store's members", leaf.Subject.CommonName, s.peerDomain)
	}
	return nil
}

// namesHostIn reports whether c names a host of domain (a member of the
// headless Service: "*.<domain>" or "<pod>.<domain>"). Several stores may
// share one CA (a user's issuer); their members' certificates differ in
// these names. Exactly the domain: a name under a longer one
// ("<pod>.<domain>.example.com") is somebody else's.
func namesHostIn(c *x509.Certificate, domain string) bool {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	for _, n := range c.DNSNames {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		host, rest, ok := strings.Cut(n, ".")
		if !ok || host == "" || strings.Contains(host, "*") && host != "*" {
			continue
		}
		if rest == domain {
			return true
		}
	}
	return false
}

// serverUsage reports whether c may serve TLS (no extended key usage at
// all means any usage, as crypto/x509 treats it).
func serverUsage(c *x509.Certificate) bool {
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}
