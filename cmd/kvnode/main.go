// Command kvnode runs one node of a replicated key-value store: the REST
// API of the book's store, backed by a durable transaction log and
// replicated with Raft. It is the only place where the kvnode packages are
// wired together.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"

	"github.com/kvstore-operator/kvstore-operator/kvnode/cluster"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/health"
	"github.com/kvstore-operator/kvstore-operator/kvnode/metrics"
	"github.com/kvstore-operator/kvstore-operator/kvnode/rest"
	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return runBackup(args[1:], stdout, stderr)
		case "restore":
			return runRestore(args[1:], stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvnode:", err)
		return 2
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))
	if err := serve(cfg, logger, stdout); err != nil {
		logger.Error("kvnode failed", "error", err.Error())
		return 1
	}
	return 0
}

func serve(cfg *config, logger *slog.Logger, stdout io.Writer) error {
	// Signals are caught before anything starts so that a SIGTERM during
	// startup still shuts down cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	m := metrics.New()
	store := core.NewStore()
	tlsSetup, err := setupTLS(cfg, logger)
	if err != nil {
		return err
	}
	defer tlsSetup.close()
	if c := tlsSetup.apiCerts; c != nil {
		m.WatchCertificate("api", c.NotAfter)
	}
	if c := tlsSetup.peerCerts; c != nil {
		m.WatchCertificate("peer", c.NotAfter)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	var grpcLn net.Listener
	if cfg.GRPCListen != "" {
		if grpcLn, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("--grpc-listen: %w", err)
		}
	}
	apiAdvertise := cfg.APIAdvertise
	if apiAdvertise == "" {
		apiAdvertise = tlsSetup.scheme + "://" + ln.Addr().String()
	}
	grpcAdvertise := cfg.GRPCAdvertise
	if grpcAdvertise == "" && grpcLn != nil {
		grpcAdvertise = defaultGRPCAdvertise(apiAdvertise, grpcLn.Addr())
	}
	bootstrap, why := cfg.bootstrap()
	limits := core.Limits{MaxKeyBytes: cfg.MaxKeyBytes, MaxValueBytes: cfg.MaxValueBytes}
	var node backend
	var clusterHandler http.Handler
	var raftNode *cluster.Node
	if cfg.Log == logPostgres {
		pg, err := openPostgres(cfg, logger, store, m)
		if err != nil {
			_ = ln.Close()
			if grpcLn != nil {
				_ = grpcLn.Close()
			}
			return err
		}
		node, clusterHandler = pg, noClusterAPI()
	} else {
		raftNode, err = cluster.Open(cluster.Config{
			Limits:            limits,
			APIAdvertise:      apiAdvertise,
			GRPCAdvertise:     grpcAdvertise,
			APIClient:         tlsSetup.apiClient,
			PeerTLS:           tlsSetup.peer,
			NodeID:            cfg.NodeID,
			DataDir:           cfg.DataDir,
			PeerBind:          cfg.PeerListen,
			PeerAdvertise:     cfg.PeerAdvertise,
			Bootstrap:         bootstrap,
			SnapshotThreshold: cfg.SnapshotThreshold,
			SnapshotInterval:  cfg.SnapshotInterval,
			// 0 on the command line turns the rule off; the cluster package
			// reads a zero as its default.
			SnapshotLogRatio:    cmp.Or(cfg.SnapshotLogRatio, -1),
			SnapshotMinLogBytes: cfg.SnapshotMinLog,
			SegmentBytes:        cfg.SegmentBytes,
			ReadLease:           cfg.ReadLease,
			RestoreFrom:         cfg.RestoreFrom,
			RecoverAlone:        cfg.RecoverAlone,
			Restart: func() {
				select {
				case sigs <- syscall.SIGTERM:
				default:
				}
			},
			TrailingLogs: min(10240, max(cfg.SnapshotThreshold, 64)),
			LogObserver:  m,
			Logger:       cluster.SlogLogger(logger, "raft"),
		}, store)
		if err != nil {
			_ = ln.Close() // nothing was served on it
			if grpcLn != nil {
				_ = grpcLn.Close()
			}
			return fmt.Errorf("open the store in %s: %w", cfg.DataDir, err)
		}
		m.WatchNode(raftNode.Status, store.Len)
		node, clusterHandler = raftNode, cluster.Handler(raftNode, cluster.Authorizers{Admin: tlsSetup.authorizeAdmin, Peer: tlsSetup.authorizePeer})
	}
	svc := core.NewService(store, node, limits)
	dataDir := cfg.DataDir
	if cfg.Log == logPostgres {
		dataDir = "" // stateless: no volume to check
	}
	checker := &health.Checker{DataDir: dataDir, Cluster: node, Reader: prober{svc}}

	// One bound for the client API and the internal calls: a flood of
	// either is load on the same node. The membership API stays outside,
	// so that the operator can still act on an overloaded node, and so do
	// the probes. Within the bound, each client of the REST key API is
	// held to its rate (429); the operator and the members are not
	// clients.
	gate := shed.New(cfg.MaxInFlight)
	shedding := rest.Shedder(gate, time.Second)
	limiter := throttle.New(throttle.Config{Default: throttle.Limit{Rate: cfg.ClientRate, Burst: cfg.ClientBurst}, MaxIdentities: cfg.RateIdentities})
	throttled := rest.Throttle(limiter, tlsSetup.guard, m.Throttled)
	leaderAPI := func() string { api, _ := node.LeaderHint(); return api }
	leaderGRPC := func() string { _, g := node.LeaderHint(); return g }
	keys := throttled(rest.LeaderHint(leaderAPI)(rest.Deadline(cfg.RequestTimeout, rest.NewRouter(svc, logger, tlsSetup.guard))))
	if !cfg.RESTAPI {
		keys = rest.Off("the REST key API is off on this store (--rest-api=false); use gRPC")
	}
	api := m.Instrument(shedding(keys))
	clusterAPI := rest.Deadline(cfg.RequestTimeout, clusterHandler)
	members := m.Instrument(clusterAPI)
	internal := m.Instrument(shedding(clusterAPI))
	srv := &http.Server{
		Handler:           routes(api, members, internal, checker, m.Handler()),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(&slogWriter{logger}, "", 0),
	}
	srv.TLSConfig = tlsSetup.server
	scheme := tlsSetup.scheme
	served := make(chan error, 3) // HTTP, gRPC and profiles
	go func() {
		if scheme == "https" {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	var grpcSrv *grpc.Server
	if grpcLn != nil {
		var grpcHealth *grpchealth.Server
		grpcSrv, grpcHealth = grpcapi.NewServer(grpcapi.Config{
			KV: svc, Guard: tlsSetup.guard, Gate: gate, Timeout: cfg.RequestTimeout, Limiter: limiter, Throttled: m.Throttled,
			TLS: tlsSetup.server, Logger: logger, Observer: m, Leader: leaderGRPC,
		})
		go followHealth(checker, grpcHealth, 500*time.Millisecond)
		go func() {
			if err := grpcSrv.Serve(grpcLn); err != nil {
				served <- fmt.Errorf("gRPC: %w", err)
			}
		}()
		logger.Info("kvnode gRPC listening", "addr", grpcLn.Addr().String(), "tls", tlsSetup.server != nil)
	}
	if cfg.PprofListen != "" {
		addr, err := servePprof(cfg.PprofListen, served)
		if err != nil {
			return errors.Join(fmt.Errorf("--pprof-listen: %w", err), srv.Close(), node.Shutdown())
		}
		logger.Info("profiles served", "addr", addr)
	}
	logger.Info("kvnode listening", "addr", ln.Addr().String(), "scheme", scheme, "node", cfg.NodeID, "dataDir", cfg.DataDir, "peer", cfg.PeerListen, "api", apiAdvertise, "peerTLS", tlsSetup.peer != nil, "clientAuth", cfg.ClientAuth, "clientRate", limiter.Default().String())
	if raftNode != nil && !bootstrap && raftNode.Status().LastIndex == 0 {
		// Without this line the only sign is raft's "no known peers" warning.
		logger.Info("no cluster state: waiting to be added to a cluster by its leader (or bootstrapped through the membership API)", "why", why)
	}

	select {
	case err := <-served:
		// The serve error is what the caller needs; a shutdown error too.
		return errors.Join(err, node.Shutdown())
	case s := <-sigs:
		logger.Info("shutting down: draining in-flight requests", "signal", s.String())
	}
	go func() {
		s := <-sigs
		logger.Warn("second signal: exiting now", "signal", s.String())
		os.Exit(1)
	}()
	checker.Drain()
	// Clients keep no connection to a node on its way out: responses
	// from now on close theirs, and idle ones are closed now, while the
	// node still serves, not when the listener closes.
	srv.SetKeepAlivesEnabled(false)
	// Leadership first, while this node still answers the members that
	// forward to it; then the drain delay, then the listener closes.
	node.HandOver()
	time.Sleep(cfg.DrainDelay)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Both front ends drain at once, under one deadline.
	grpcDone := make(chan struct{})
	go func() {
		defer close(grpcDone)
		if grpcSrv != nil {
			stopGRPC(ctx, grpcSrv)
		}
	}()
	shutdownErr := srv.Shutdown(ctx)
	<-grpcDone
	if shutdownErr != nil {
		logger.Warn("in-flight requests did not finish in time", "error", shutdownErr.Error())
	}
	if err := node.Shutdown(); err != nil {
		return fmt.Errorf("close the store: %w", err)
	}
	logger.Info("kvnode stopped; transaction log flushed and closed")
	return nil
}

// defaultGRPCAdvertise is where clients reach this node's gRPC API when
// --grpc-advertise is not given: the host other members reach its API at
// (a stable DNS name in Kubernetes), and the port gRPC listens on.
func defaultGRPCAdvertise(apiAdvertise string, grpcAddr net.Addr) string {
	u, err := url.Parse(apiAdvertise)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(grpcAddr.String())
	if err != nil {
		return ""
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// servePprof serves Go's profiles on addr (checked to be loopback by
// config.validate) with a mux of its own: nothing of them reaches the API
// port.
func servePprof(addr string, served chan<- error) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil {
			served <- fmt.Errorf("pprof: %w", err)
		}
	}()
	return l.Addr().String(), nil
}

// followHealth sets the gRPC health service to what /readyz answers, so
// that gRPC clients and probes see a draining or lagging node as /readyz
// shows it. It runs until the process ends.
func followHealth(c *health.Checker, h *grpchealth.Server, every time.Duration) {
	for {
		grpcapi.SetServing(h, c.Ready() == nil)
		time.Sleep(every)
	}
}

// stopGRPC lets in-flight calls finish until ctx ends, then cuts the
// rest, as http.Server.Shutdown does for REST.
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
	}
}

// routes serves the probes and metrics outside of load shedding, and the
// APIs under /v1/: internal is the calls members make to each other,
// members the membership API, api the client API. It is not an http.ServeMux because ServeMux rewrites
// paths with "//" or "." segments, which are legal in keys.
func routes(api, members, internal http.Handler, c *health.Checker, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/livez":
			c.Livez(w, r)
		case p == "/readyz":
			c.Readyz(w, r)
		case p == "/healthz":
			c.Healthz(w, r)
		case p == "/metrics":
			metrics.ServeHTTP(w, r)
		case strings.HasPrefix(p, clusterapi.PathInternal):
			internal.ServeHTTP(w, r)
		case p == clusterapi.PathCluster || strings.HasPrefix(p, clusterapi.PathCluster+"/"):
			members.ServeHTTP(w, r)
		case strings.HasPrefix(p, "/v1/"):
			api.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// prober is the deep health check's read: a linearizable read, which
// exercises the quorum round, the apply wait and the store. Whether the
// key exists does not matter.
type prober struct{ svc *core.Service }

func (p prober) Probe(ctx context.Context) error {
	_, err := p.svc.Get(ctx, "\x00kvnode-health", core.Linearizable)
	if errors.Is(err, core.ErrNoSuchKey) {
		return nil
	}
	return err
}

// slogWriter sends net/http's own error log (TLS handshake failures and
// the like) to the JSON log.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)), "source", "net/http")
	return len(p), nil
}
