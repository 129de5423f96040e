package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/health"
	"github.com/kvstore-operator/kvstore-operator/kvnode/metrics"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog"
)

// Where the transaction log lives (--log).
const (
	logRaft     = "raft"
	logPostgres = "postgres"
)

// backend is what serve needs of the log: Raft's cluster.Node or
// PostgreSQL's pglog.Log.
type backend interface {
	core.Replicator
	health.Cluster
	// LeaderHint names the leader's API URL and gRPC address, for clients
	// that send writes straight to it; empty without one.
	LeaderHint() (api, grpcAddr string)
	// HandOver gives up what this node holds for the others before it
	// stops (Raft's leadership).
	HandOver()
	Shutdown() error
}

// postgresNode adapts pglog.Log: every node writes to the log, so there
// is no leader to name and nothing to hand over.
type postgresNode struct {
	*pglog.Log
	drain time.Duration
}

func (postgresNode) LeaderHint() (string, string) { return "", "" }
func (postgresNode) HandOver()                    {}

// Shutdown commits the writes still queued, within the shutdown timeout.
func (p postgresNode) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.drain)
	defer cancel()
	return p.Close(ctx)
}

func openPostgres(cfg *config, logger *slog.Logger, store *core.Store, m *metrics.Metrics) (backend, error) {
	pc := cfg.postgres()
	pc.Logger = logger.With("log", "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	l, err := pglog.Open(ctx, pc, store)
	if err != nil {
		return nil, fmt.Errorf("open the postgres log (host %s, database %s): %w", pc.Host, pc.Database, err)
	}
	m.WatchPostgres(func() (head, applied uint64, open bool) {
		s := l.Status()
		return s.Head, s.Applied, s.Open
	}, store.Len)
	logger.Info("transaction log in postgres", "host", pc.Host, "port", pc.Port, "database", pc.Database, "user", pc.User, "sslmode", pc.SSLMode, "store", pc.Store)
	return postgresNode{Log: l, drain: cfg.ShutdownTimeout}, nil
}

// noClusterAPI answers the membership and internal APIs of a Postgres
// store, which has neither: its nodes share the log, not a Raft group.
func noClusterAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "this store keeps its log in postgres (--log=postgres): it has no members and no cluster API", http.StatusNotFound)
	})
}

func (c *config) postgres() pglog.Config {
	return pglog.Config{
		Host: c.PGHost, Port: c.PGPort, Database: c.PGDatabase, User: c.PGUser, Password: c.PGPassword,
		SSLMode: c.PGSSLMode, CAFile: c.PGCA, Store: c.PGStore, Retain: c.PGRetain,
	}
}
