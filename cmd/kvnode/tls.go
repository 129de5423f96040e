package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// tlsSetup is the node's TLS material: the API's server configuration, the
// client that calls other members' APIs, the peer (Raft) configuration,
// and who may use the membership API.
type tlsSetup struct {
	scheme    string
	server    *tls.Config
	apiClient *http.Client
	peer      *tls.Config
	adminCN   string
	closers   []func()
}

func setupTLS(cfg *config, logger *slog.Logger) (*tlsSetup, error) {
	s := &tlsSetup{scheme: "http", adminCN: cfg.AdminCN}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}
	s.apiClient = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	if cfg.TLSCert != "" {
		r, err := certs.NewReloader(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, cfg.TLSReload, logger)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		s.closers = append(s.closers, r.Close)
		s.server, s.scheme = r.ServerConfig(), "https"
		if cfg.TLSCA != "" {
			transport.TLSClientConfig = r.ClientConfig()
		}
	}
	if cfg.PeerCert != "" {
		r, err := certs.NewReloader(cfg.PeerCert, cfg.PeerKey, cfg.PeerCA, cfg.TLSReload, logger)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("peer TLS: %w", err)
		}
		s.closers = append(s.closers, r.Close)
		if s.peer, err = r.MutualConfig(""); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *tlsSetup) close() {
	for _, c := range s.closers {
		c()
	}
}

// authorizeAdmin lets a request use the membership API when it presents a
// client certificate, verified against the cluster CA, whose common name
// is the admin's. A node without TLS (development) accepts only loopback
// callers.
func (s *tlsSetup) authorizeAdmin(r *http.Request) error {
	if r.TLS == nil {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
			return nil
		}
		return errors.New("the membership API needs TLS with an admin client certificate (plain HTTP: loopback only)")
	}
	if len(r.TLS.VerifiedChains) == 0 {
		return errors.New("the membership API needs a client certificate signed by the cluster CA")
	}
	if cn := r.TLS.VerifiedChains[0][0].Subject.CommonName; cn != s.adminCN {
		return fmt.Errorf("client certificate %q is not the admin's", cn)
	}
	return nil
}
