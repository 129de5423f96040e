// Package health owns the node's probe endpoints: /livez (the process
// answers and is not stuck in a state it cannot leave by itself, such as a
// transaction log that failed for good; never touches disk or the
// cluster, and a full disk does not fail it: a restart frees no space),
// /readyz (the node can serve:
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
	"strings"
	"sync/atomic"
	"time"
)

// Cluster reports whether the replicated store can serve.
type Cluster interface {
	Ready() error
}

// Lively is implemented by a Cluster that can be stuck for good: Live
// reports why, and /livez fails so that the process is restarted.
type Lively interface {
	Live() error
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

// Livez answers 200 while the process is up, serving HTTP, and not stuck
// (Lively).
func (c *Checker) Livez(w http.ResponseWriter, _ *http.Request) {
	if l, ok := c.Cluster.(Lively); ok {
		writeAs(w, "not alive", l.Live())
		return
	}
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

// Ready is what Readyz answers: nil when the node should receive traffic
// (the gRPC health service follows it).
func (c *Checker) Ready() error { return c.ready() }

func (c *Checker) ready() error {
	if c.draining.Load() {
		return errors.New("shutting down")
	}
	if c.DataDir != "" { // a Postgres-mode node has none
		if err := writable(c.DataDir); err != nil {
			return err
		}
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

func write(w http.ResponseWriter, err error) { writeAs(w, "not ready", err) }

func writeAs(w http.ResponseWriter, what string, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s: %v\n", what, strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Fprintln(w, "ok")
}
