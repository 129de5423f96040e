// Package health owns the node's probe endpoints: /livez (the process
// answers; never touches disk or the cluster), /readyz (the node can serve:
// log open, data directory writable, a leader known, caught up), and
// /healthz?deep=1 (a real linearizable read through the store). Mount them
// outside load shedding: a busy node must not look dead.
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Cluster reports whether the replicated store can serve.
type Cluster interface {
	Ready() error
}

// Reader performs a real read; the deep check calls it.
type Reader interface {
	Probe(ctx context.Context) error
}

// Checker serves the probes.
type Checker struct {
	DataDir  string
	Cluster  Cluster
	Reader   Reader
	draining atomic.Bool
}

// Drain makes /readyz fail from now on, so that endpoints stop sending
// traffic while in-flight requests finish.
func (c *Checker) Drain() { c.draining.Store(true) }

// Livez always answers 200: the process is up and serving HTTP.
func (c *Checker) Livez(w http.ResponseWriter, _ *http.Request) {
	write(w, nil)
}

// Readyz answers 200 when the node should receive traffic.
func (c *Checker) Readyz(w http.ResponseWriter, _ *http.Request) {
	write(w, c.ready())
}

// Healthz is Readyz plus, with ?deep=1, a linearizable read through the
// store, which proves the whole path from HTTP to the quorum.
func (c *Checker) Healthz(w http.ResponseWriter, r *http.Request) {
	err := c.ready()
	if err == nil && r.URL.Query().Get("deep") != "" && c.Reader != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if perr := c.Reader.Probe(ctx); perr != nil {
			err = fmt.Errorf("read through the store: %w", perr)
		}
	}
	write(w, err)
}

func (c *Checker) ready() error {
	if c.draining.Load() {
		return errors.New("shutting down")
	}
	if err := writable(c.DataDir); err != nil {
		return err
	}
	if c.Cluster != nil {
		return c.Cluster.Ready()
	}
	return nil
}

// writable creates and removes a file in dir: a full or read-only volume
// fails here before it fails a client's write.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	name := f.Name()
	_ = f.Close() // empty, and removed next
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return nil
}

func write(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ok")
}
