package access

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Policy is what a node enforces: the rules read from a file, re-read on
// an interval (the operator's ConfigMap, mounted as a volume, is
// replaced atomically when spec.clients changes), and the CA that client
// certificates must chain to.
type Policy struct {
	path   string
	roots  func() *x509.CertPool
	logger *slog.Logger
	rules  atomic.Pointer[map[string]Client]
	raw    []byte // what rules was parsed from; only the poller touches it
	bad    []byte // the last content refused, so that it is logged once
	stop   chan struct{}
	once   sync.Once
}

// LoadPolicy reads the rules at path (an error here is fatal: a node
// must not start admitting clients it cannot name) and then re-reads
// them every interval. A file that turns unreadable or invalid later
// keeps the last good rules, and the node says so in its log: refusing
// every client over a half-written edit would be an outage, and a
// removal still takes effect with the next good file.
func LoadPolicy(path string, roots func() *x509.CertPool, interval time.Duration, logger *slog.Logger) (*Policy, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Policy{path: path, roots: roots, logger: logger, stop: make(chan struct{})}
	if err := p.reload(); err != nil {
		return nil, err
	}
	if interval > 0 {
		go p.poll(interval)
	}
	return p, nil
}

func (p *Policy) reload() error {
	f, err := os.Open(p.path)
	if err != nil {
		return fmt.Errorf("access rules: %w", err)
	}
	defer f.Close() //nolint:errcheck // read only: nothing to flush
	b, err := io.ReadAll(io.LimitReader(f, maxRulesBytes+1))
	if err != nil {
		return fmt.Errorf("access rules %s: %w", p.path, err)
	}
	if p.rules.Load() != nil && bytes.Equal(b, p.raw) || p.bad != nil && bytes.Equal(b, p.bad) {
		return nil
	}
	rules, err := ParseRules(b)
	if err != nil {
		p.bad = b
		return fmt.Errorf("%s: %w", p.path, err)
	}
	p.raw, p.bad = b, nil
	p.rules.Store(&rules)
	p.logger.Info("access rules loaded", "file", p.path, "clients", len(rules))
	return nil
}

func (p *Policy) poll(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.reload(); err != nil {
				p.logger.Error("access rules not reloaded: keeping the last good ones", "error", err.Error())
			}
		}
	}
}

// Guard says who a request's client is; Policy is the one in use. Every
// front end asks it on every request, after the key is decoded and before
// anything is read or written: the rights are checked on the key the store
// will use.
type Guard interface {
	Identify(cs *tls.ConnectionState) (Client, error)
}

// Identify is Identify under the current rules and CA.
func (p *Policy) Identify(cs *tls.ConnectionState) (Client, error) {
	return Identify(cs, p.roots(), *p.rules.Load())
}

// Close stops the polling.
func (p *Policy) Close() { p.once.Do(func() { close(p.stop) }) }
