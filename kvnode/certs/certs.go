// Package certs owns TLS material loaded from files that change under a
// running process: a Kubernetes Secret mounted as a volume is replaced
// atomically when it is updated, and the node must serve the new
// certificate on new connections without a restart.
package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloader holds a certificate (and optionally a CA bundle) read from
// files, and re-reads them on an interval. It hands the current ones to
// crypto/tls through GetCertificate, GetClientCertificate and
// VerifyConnection, so every new handshake sees the latest files.
type Reloader struct {
	certFile, keyFile, caFile string
	logger                    *slog.Logger

	mu       sync.RWMutex
	cert     *tls.Certificate
	pool     *x509.CertPool
	raw      [3][]byte
	notAfter time.Time

	stop chan struct{}
	once sync.Once
}

// NewReloader loads the files once (an error here is fatal: a node must not
// start with a broken certificate) and then polls them every interval.
// caFile may be empty when no client certificates are verified.
func NewReloader(certFile, keyFile, caFile string, interval time.Duration, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, caFile: caFile, logger: logger, stop: make(chan struct{})}
	if _, err := r.reload(); err != nil {
		return nil, err
	}
	if interval > 0 {
		go r.poll(interval)
	}
	return r, nil
}

func (r *Reloader) poll(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			changed, err := r.reload()
			if err != nil {
				// Keep serving the old certificate: a half-written update is
				// normal for a moment, and a bad one must not take the node down.
				r.logger.Warn("TLS files unreadable; keeping the current certificate", "cert", r.certFile, "error", err.Error())
			} else if changed {
				r.logger.Info("TLS certificate reloaded", "cert", r.certFile, "notAfter", r.NotAfter())
			}
		}
	}
}

// Close stops polling.
func (r *Reloader) Close() { r.once.Do(func() { close(r.stop) }) }

// reload re-reads the files and swaps them in when their content changed.
func (r *Reloader) reload() (bool, error) {
	var raw [3][]byte
	for i, f := range []string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return false, err
		}
		raw[i] = b
	}
	r.mu.RLock()
	same := bytes.Equal(raw[0], r.raw[0]) && bytes.Equal(raw[1], r.raw[1]) && bytes.Equal(raw[2], r.raw[2])
	r.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("%s: %w", r.certFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return false, fmt.Errorf("%s: %w", r.certFile, err)
	}
	cert.Leaf = leaf
	var pool *x509.CertPool
	if r.caFile != "" {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			return false, fmt.Errorf("%s: no PEM certificates", r.caFile)
		}
	}
	r.mu.Lock()
	r.cert, r.pool, r.raw, r.notAfter = &cert, pool, raw, leaf.NotAfter
	r.mu.Unlock()
	return true, nil
}

// NotAfter is the expiry of the current certificate.
func (r *Reloader) NotAfter() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.notAfter
}

// Certificate returns the current certificate.
func (r *Reloader) Certificate() *tls.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert
}

// Pool returns the current CA bundle (nil without a CA file).
func (r *Reloader) Pool() *x509.CertPool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pool
}

// ServerConfig is a TLS server configuration that always presents the
// current certificate and offers HTTP/2. With a CA file, or other
// reloaders in clientCAs, it also asks for client certificates and
// verifies those it is given against the current CAs of all of them (the
// admin API requires one chained to r's CA, the calls members make to
// each other one chained to the peer CA; the client API requires none).
// The handshake only checks the chain; which CA and which identity an API
// accepts is for the API to decide.
func (r *Reloader) ServerConfig(clientCAs ...*Reloader) *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
	}
	var sources []*Reloader
	for _, c := range append([]*Reloader{r}, clientCAs...) {
		if c != nil && c.caFile != "" {
			sources = append(sources, c)
		}
	}
	if len(sources) == 0 {
		return base
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = clientPool(sources)
		return c, nil
	}
	return base
}

// clientPool is the union of the current CAs of sources.
func clientPool(sources []*Reloader) *x509.CertPool {
	if len(sources) == 1 {
		return sources[0].Pool()
	}
	pool := x509.NewCertPool()
	for _, s := range sources {
		s.mu.RLock()
		caPEM := s.raw[2]
		s.mu.RUnlock()
		pool.AppendCertsFromPEM(caPEM) // parsed once already by reload: it is valid
	}
	return pool
}

// ClientConfig is for calls to other members' HTTPS APIs: the server's
// certificate must chain to the current CA and name the host dialled. The
// client presents present's current certificate, when present is not nil:
// the calls members make to each other (forwarded writes, read indexes,
// status) are served to other members only, and a member proves it is one
// with its peer certificate. The API's own certificate would not do: it is
// a server certificate, refused as a client one for its usage.
func (r *Reloader) ClientConfig(present *Reloader) *tls.Config {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below against the live CA, hostname included
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("certs: server presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: r.Pool(), DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}
	if present != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return present.Certificate(), nil
		}
	}
	return c
}

// MutualConfig is for peer traffic: both sides present the current
// certificate and require the other's to chain to the current CA, and to
// pass accept (nil accepts any), which tells a peer's certificate from
// other certificates of the same CA (the admin's, a client's). The CA is
// checked in VerifyConnection, not through RootCAs/ClientCAs, so that a
// rotated CA takes effect without rebuilding the config.
func (r *Reloader) MutualConfig(serverName string, accept func(*x509.Certificate) error) (*tls.Config, error) {
	if r.caFile == "" {
		return nil, errors.New("certs: mutual TLS needs a CA file")
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("certs: peer presented no certificate")
		}
		opts := x509.VerifyOptions{Roots: r.Pool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return err
		}
		if accept != nil {
			return accept(cs.PeerCertificates[0])
		}
		return nil
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true, // verification is done by VerifyConnection against the live CA
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
		VerifyConnection: verify,
	}, nil
}
