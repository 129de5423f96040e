package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pgenv"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// config is everything kvnode can be told, from flags or KV_* variables.
type config struct {
	Listen            string
	DataDir           string
	NodeID            string
	PeerListen        string
	PeerAdvertise     string
	Bootstrap         string // a clusterapi.Bootstrap* mode
	TLSCert, TLSKey   string
	TLSCA             string
	PeerCert, PeerKey string
	PeerCA            string
	APIAdvertise      string
	AdminCN           string
	ClientAuth        string // an access.Mode*
	ClientsFile       string
	GRPCListen        string
	PprofListen       string
	GRPCAdvertise     string
	RESTAPI           bool
	PeerDomain        string
	TLSReload         time.Duration
	MaxKeyBytes       int
	MaxValueBytes     int
	MaxInFlight       int
	ClientRate        float64
	ClientBurst       int
	RateIdentities    int
	RequestTimeout    time.Duration
	ShutdownTimeout   time.Duration
	DrainDelay        time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	SnapshotLogRatio  float64
	SnapshotMinLog    int64
	SegmentBytes      int64
	ReadLease         bool
	RestoreFrom       string
	RecoverAlone      string
	LogLevel          string
	Log               string // logRaft or logPostgres
	PGHost            string
	PGPort            int
	PGDatabase        string
	PGUser            string
	PGPassword        string // from TLOG_DB_PASSWORD only: never a flag, never logged
	PGSSLMode         string
	PGCA              string
	PGStore           string
	PGRetain          int64
	// ClusterFlags are the cluster flags that were set (see clusterFlags).
	ClusterFlags []string
}

// parseConfig reads flags from args; a flag not given on the command line
// takes its KV_* variable from getenv when that is set (twelve-factor).
func parseConfig(args []string, getenv func(string) (string, bool), usageOut io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("kvnode", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	envOf := map[string]string{}
	bind := func(name, env, usage string, define func(string)) {
		envOf[name] = env
		define(fmt.Sprintf("%s (env %s)", usage, env))
	}
	host, _ := os.Hostname()
	bind("listen", "KV_LISTEN", "address of the client API, probes and metrics", func(u string) { fs.StringVar(&c.Listen, "listen", ":8080", u) })
	bind("grpc-listen", "KV_GRPC_LISTEN", "address of the gRPC client API (keyvalue.v1.KeyValue and grpc.health.v1), with the TLS and client authentication of --listen; unset, the host of --listen and port "+defaultGRPCPort+"; empty turns it off", func(u string) { fs.StringVar(&c.GRPCListen, "grpc-listen", ":"+defaultGRPCPort, u) })
	bind("grpc-advertise", "KV_GRPC_ADVERTISE", "address clients reach this node's gRPC API at, which the other members name to clients that send writes straight to the leader (default: the host of --api-advertise and the port of --grpc-listen)", func(u string) { fs.StringVar(&c.GRPCAdvertise, "grpc-advertise", "", u) })
	bind("rest-api", "KV_REST_API", "serve the REST key routes on --listen; false answers them 501 (the membership API, probes and metrics stay)", func(u string) { fs.BoolVar(&c.RESTAPI, "rest-api", true, u) })
	bind("data-dir", "KV_DATA_DIR", "directory for the transaction log and snapshots (the pod's volume)", func(u string) { fs.StringVar(&c.DataDir, "data-dir", "data", u) })
	bind("node-id", "KV_NODE_ID", "stable identity of this node in the cluster (the pod name)", func(u string) { fs.StringVar(&c.NodeID, "node-id", host, u) })
	bind("peer-listen", "KV_PEER_LISTEN", "address Raft peer traffic is received on", func(u string) { fs.StringVar(&c.PeerListen, "peer-listen", "127.0.0.1:8081", u) })
	bind("peer-advertise", "KV_PEER_ADVERTISE", "address other members dial to reach this node (default: the peer listen address)", func(u string) { fs.StringVar(&c.PeerAdvertise, "peer-advertise", "", u) })
	bind("bootstrap", "KV_BOOTSTRAP", "auto, always or never: whether a node whose data directory holds no Raft state starts a new one-member cluster by itself. auto: only a standalone node, given none of --peer-listen, --peer-advertise, --api-advertise, --peer-tls-*; never: it waits to be added by a cluster's leader (the operator's pods). A node with Raft state never bootstraps again", func(u string) { fs.StringVar(&c.Bootstrap, "bootstrap", clusterapi.BootstrapAuto, u) })
	bind("tls-cert", "KV_TLS_CERT", "PEM certificate for HTTPS; re-read when it changes. Without it the API is plain HTTP", func(u string) { fs.StringVar(&c.TLSCert, "tls-cert", "", u) })
	bind("tls-key", "KV_TLS_KEY", "PEM private key of --tls-cert", func(u string) { fs.StringVar(&c.TLSKey, "tls-key", "", u) })
	bind("tls-ca", "KV_TLS_CA", "PEM CA bundle of the cluster: verifies admin client certificates and the other members' API certificates", func(u string) { fs.StringVar(&c.TLSCA, "tls-ca", "", u) })
	bind("peer-tls-cert", "KV_PEER_TLS_CERT", "PEM certificate for Raft peer traffic (mutual TLS), also presented on other members' internal API; without it peer traffic is plain TCP and the internal API serves loopback callers only (development only)", func(u string) { fs.StringVar(&c.PeerCert, "peer-tls-cert", "", u) })
	bind("peer-tls-key", "KV_PEER_TLS_KEY", "PEM private key of --peer-tls-cert", func(u string) { fs.StringVar(&c.PeerKey, "peer-tls-key", "", u) })
	bind("peer-tls-ca", "KV_PEER_TLS_CA", "PEM CA bundle that peers' certificates must chain to, on the peer port and on the internal API", func(u string) { fs.StringVar(&c.PeerCA, "peer-tls-ca", "", u) })
	bind("api-advertise", "KV_API_ADVERTISE", "URL other members use to reach this node's API, e.g. https://kvs-0.kvs-peers.default.svc:8080 (default: from --listen)", func(u string) { fs.StringVar(&c.APIAdvertise, "api-advertise", "", u) })
	bind("admin-cn", "KV_ADMIN_CN", "common name of the client certificate the membership API requires", func(u string) { fs.StringVar(&c.AdminCN, "admin-cn", "kvstore-admin", u) })
	bind("client-auth", "KV_CLIENT_AUTH", "none or mtls: with mtls every request to the client API needs a client certificate, chained to --tls-ca, of a client that --clients names, and is held to that client's rights (401 without an accepted certificate, 403 outside its rights); probes and metrics stay open", func(u string) { fs.StringVar(&c.ClientAuth, "client-auth", access.ModeNone, u) })
	bind("clients", "KV_CLIENTS", "the access rules file (JSON: {\"clients\":[{\"name\":...,\"access\":\"readWrite|readOnly\",\"prefix\":...,\"requestsPerSecond\":...,\"burst\":...}]}) that --client-auth=mtls enforces, the rates included; re-read when it changes", func(u string) { fs.StringVar(&c.ClientsFile, "clients", "", u) })
	bind("peer-domain", "KV_PEER_DOMAIN", "the DNS domain of the members (the headless Service's, e.g. kvs-peers.default.svc): a peer certificate must name a host in it, so that a certificate of another store signed by the same CA is no peer here. Empty: any peer certificate of --peer-tls-ca", func(u string) { fs.StringVar(&c.PeerDomain, "peer-domain", "", u) })
	bind("tls-reload-interval", "KV_TLS_RELOAD_INTERVAL", "how often the TLS files are checked for changes", func(u string) { fs.DurationVar(&c.TLSReload, "tls-reload-interval", 10*time.Second, u) })
	bind("max-key-bytes", "KV_MAX_KEY_BYTES", "largest key accepted (414 above)", func(u string) { fs.IntVar(&c.MaxKeyBytes, "max-key-bytes", 1024, u) })
	bind("max-value-bytes", "KV_MAX_VALUE_BYTES", "largest value accepted (413 above)", func(u string) { fs.IntVar(&c.MaxValueBytes, "max-value-bytes", 1<<20, u) })
	bind("max-in-flight", "KV_MAX_IN_FLIGHT", "API requests served at once; more are shed with 503 and Retry-After (0: no bound)", func(u string) { fs.IntVar(&c.MaxInFlight, "max-in-flight", 1024, u) })
	bind("client-rate", "KV_CLIENT_RATE", "requests per second each client may make of the key API on this node, sustained; more are answered 429 with Retry-After. A client is its certificate's name under --client-auth=mtls, else its IP address; a client in --clients may have a rate of its own (requestsPerSecond). 0: no limit", func(u string) { fs.Float64Var(&c.ClientRate, "client-rate", 0, u) })
	bind("client-burst", "KV_CLIENT_BURST", "requests a client that was idle may make at once under --client-rate (its token bucket's size); 0: one second's worth of --client-rate", func(u string) { fs.IntVar(&c.ClientBurst, "client-burst", 0, u) })
	bind("client-rate-identities", "KV_CLIENT_RATE_IDENTITIES", "client identities (names and addresses) whose rate the node keeps count of, a few hundred bytes each; past that the one idle longest is forgotten, and starts again with a full burst", func(u string) {
		fs.IntVar(&c.RateIdentities, "client-rate-identities", throttle.DefaultMaxIdentities, u)
	})
	bind("request-timeout", "KV_REQUEST_TIMEOUT", "deadline of one API request, waiting for a leader included", func(u string) { fs.DurationVar(&c.RequestTimeout, "request-timeout", 5*time.Second, u) })
	bind("shutdown-timeout", "KV_SHUTDOWN_TIMEOUT", "how long SIGTERM waits for in-flight requests", func(u string) { fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, u) })
	bind("drain-delay", "KV_DRAIN_DELAY", "after SIGTERM, how long /readyz fails while requests are still served, so that load balancers stop sending traffic first", func(u string) { fs.DurationVar(&c.DrainDelay, "drain-delay", 0, u) })
	bind("snapshot-threshold", "KV_SNAPSHOT_THRESHOLD", "log entries after which a snapshot is taken and the log compacted, however small they are (a cap: the log's bytes set the usual cadence, see --snapshot-log-ratio)", func(u string) { fs.Uint64Var(&c.SnapshotThreshold, "snapshot-threshold", 1<<20, u) })
	bind("snapshot-interval", "KV_SNAPSHOT_INTERVAL", "how often the snapshot threshold (entries) is checked", func(u string) { fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", 30*time.Second, u) })
	bind("snapshot-log-ratio", "KV_SNAPSHOT_LOG_RATIO", "take a snapshot once the log has grown since the last one by this fraction of that snapshot's size (and by at least --snapshot-min-log-bytes); checked every second. 0 turns this rule off", func(u string) { fs.Float64Var(&c.SnapshotLogRatio, "snapshot-log-ratio", 0.5, u) })
	bind("snapshot-min-log-bytes", "KV_SNAPSHOT_MIN_LOG_BYTES", "the least the log grows between two snapshots taken by --snapshot-log-ratio", func(u string) { fs.Int64Var(&c.SnapshotMinLog, "snapshot-min-log-bytes", 64<<20, u) })
	bind("log-segment-bytes", "KV_LOG_SEGMENT_BYTES", "room for records in one transaction-log segment, preallocated whole; 0 fits it to the volume: a 32nd of it, from 1 MiB to 64 MiB", func(u string) { fs.Int64Var(&c.SegmentBytes, "log-segment-bytes", 0, u) })
	bind("restore-from", "KV_RESTORE_FROM", "a backup file (GET /v1/cluster/backup) to start a new cluster from: on an empty data directory the node checks the backup, restores it with a new cluster ID and leads a one-member cluster; with Raft state it starts as usual if that state came from this backup, and refuses otherwise", func(u string) { fs.StringVar(&c.RestoreFrom, "restore-from", "", u) })
	bind("recover-alone", "KV_RECOVER_ALONE", "a token: once per token, make this member the whole cluster before it starts, for the survivor of a quorum that is lost for good (volumes gone). Writes other members committed after this member's last entry are lost; the others join again as new members. A restart with the same token starts as usual", func(u string) { fs.StringVar(&c.RecoverAlone, "recover-alone", "", u) })
	bind("read-lease", "KV_READ_LEASE", "let the leader answer linearizable reads without a quorum round for 250ms after one (its read lease). This assumes that the members' clocks run at rates within a factor of two of each other (wall-clock steps do not matter); false makes every linearizable read make a quorum round, like ?consistency=strict", func(u string) { fs.BoolVar(&c.ReadLease, "read-lease", true, u) })
	bind("pprof-listen", "KV_PPROF_LISTEN", "loopback address (e.g. 127.0.0.1:6060) to serve Go's profiles on, under /debug/pprof/, for finding where time goes (kubectl port-forward reaches it); empty: off. A profile shows keys and values in memory, so it is never served beyond loopback", func(u string) { fs.StringVar(&c.PprofListen, "pprof-listen", "", u) })
	bind("log", "KV_LOG", "where the transaction log lives: raft (each node keeps it in --data-dir and the members replicate it) or postgres (a table in PostgreSQL, which orders every write; the node keeps nothing on disk, and any number of nodes share the log). The password comes from TLOG_DB_PASSWORD only", func(u string) { fs.StringVar(&c.Log, "log", logRaft, u) })
	bind("postgres-host", pgenv.Host, "with --log=postgres: PostgreSQL's host, or the directory of its Unix socket", func(u string) { fs.StringVar(&c.PGHost, "postgres-host", "", u) })
	bind("postgres-port", pgenv.Port, "with --log=postgres: PostgreSQL's port", func(u string) { fs.IntVar(&c.PGPort, "postgres-port", 5432, u) })
	bind("postgres-database", pgenv.Database, "with --log=postgres: the database, one per store (the node creates its tables)", func(u string) { fs.StringVar(&c.PGDatabase, "postgres-database", "", u) })
	bind("postgres-user", pgenv.Username, "with --log=postgres: the user to connect as", func(u string) { fs.StringVar(&c.PGUser, "postgres-user", "", u) })
	bind("postgres-sslmode", pgenv.SSLMode, "with --log=postgres: disable, require (encrypted, server not verified), verify-ca or verify-full (both need --postgres-ca)", func(u string) { fs.StringVar(&c.PGSSLMode, "postgres-sslmode", "require", u) })
	bind("postgres-ca", pgenv.CA, "with --log=postgres: PEM CA file that verifies PostgreSQL's certificate", func(u string) { fs.StringVar(&c.PGCA, "postgres-ca", "", u) })
	bind("postgres-store", pgenv.Store, "with --log=postgres: the store's name (namespace/name); a database that holds another store's log is refused", func(u string) { fs.StringVar(&c.PGStore, "postgres-store", "", u) })
	bind("postgres-retain", "KV_POSTGRES_RETAIN", "with --log=postgres: events the log keeps behind its head when pruned (every 30 s); a node further behind loads the state table instead", func(u string) { fs.Int64Var(&c.PGRetain, "postgres-retain", 100_000, u) })
	bind("log-level", "KV_LOG_LEVEL", "debug, info, warn or error", func(u string) { fs.StringVar(&c.LogLevel, "log-level", "info", u) })
	fs.Usage = func() {
		fmt.Fprint(usageOut, `kvnode: one node of a replicated key-value store.

The API: PUT, GET and DELETE /v1/key/{key} (value = raw body), GET /v1/keys;
probes /livez, /readyz, /healthz?deep=1; Prometheus metrics on /metrics.
Every flag can also be set with the environment variable named after it.
"kvnode backup" and "kvnode restore" (each with -h) back up a running store
and restore a backup into a data directory: what backup Jobs run.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := envOf[f.Name]
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := getenv(env); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %v", env, v, serr)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	// Flags set from the environment count: fs.Set marks them as set.
	grpcSet := false
	fs.Visit(func(f *flag.Flag) {
		grpcSet = grpcSet || f.Name == "grpc-listen"
		if slices.Contains(clusterFlags, f.Name) {
			c.ClusterFlags = append(c.ClusterFlags, "--"+f.Name)
		}
	})
	if !grpcSet {
		// gRPC listens where the REST API does, on its own port: a node
		// told to serve on loopback only does not serve gRPC on every
		// interface.
		host, _, herr := net.SplitHostPort(c.Listen)
		if herr == nil {
			c.GRPCListen = net.JoinHostPort(host, defaultGRPCPort)
		}
	}
	c.PGPassword, _ = getenv(pgenv.Password)
	err = c.validate()
	return c, err
}

// defaultGRPCPort is the port of --grpc-listen when it is not given.
const defaultGRPCPort = "50051"

// clusterFlags are the flags through which other members reach this node
// or authenticate it. Whoever sets one of them means the node to be a
// member of a cluster of several, so --bootstrap=auto does not let it
// start a cluster of its own: a member that lost its volume, restarted
// empty, must wait for its leader, not found a second cluster. --node-id
// is not among them: naming a single node does not make it reachable.
var clusterFlags = []string{"peer-listen", "peer-advertise", "api-advertise", "peer-tls-cert", "peer-tls-key", "peer-tls-ca"}

// bootstrap reports whether the node may start a new one-member cluster
// when its data directory holds no Raft state, and why.
func (c *config) bootstrap() (bool, string) {
	switch {
	case c.Bootstrap == clusterapi.BootstrapAlways:
		return true, "--bootstrap=always"
	case c.Bootstrap == clusterapi.BootstrapNever:
		return false, "--bootstrap=never"
	case len(c.ClusterFlags) > 0:
		return false, "--bootstrap=auto and cluster flags given (" + strings.Join(c.ClusterFlags, ", ") + ")"
	default:
		return true, "--bootstrap=auto and no cluster flags: a standalone node"
	}
}

// entryOverhead is room, within a log record, for what a Raft entry and
// an encoded event carry besides the key and the value (indexes, term,
// type, lengths), with a wide margin.
const entryOverhead = 64 << 10

func (c *config) validate() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return fmt.Errorf("--tls-cert and --tls-key go together")
	case c.TLSCA != "" && c.TLSCert == "":
		return fmt.Errorf("--tls-ca needs --tls-cert and --tls-key")
	case (c.PeerCert == "") != (c.PeerKey == "") || (c.PeerCert == "") != (c.PeerCA == ""):
		return fmt.Errorf("--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together")
	case c.ClientAuth != access.ModeNone && c.ClientAuth != access.ModeMTLS:
		return fmt.Errorf("--client-auth must be %s or %s, not %q", access.ModeNone, access.ModeMTLS, c.ClientAuth)
	case c.ClientAuth == access.ModeMTLS && (c.TLSCA == "" || c.ClientsFile == ""):
		return fmt.Errorf("--client-auth=mtls needs --tls-cert, --tls-key, --tls-ca (the CA client certificates chain to) and --clients (who the clients are)")
	case c.ClientAuth == access.ModeNone && c.ClientsFile != "":
		return fmt.Errorf("--clients is enforced only with --client-auth=mtls")
	case c.NodeID == "":
		return fmt.Errorf("--node-id is empty")
	case c.MaxKeyBytes < 1 || c.MaxValueBytes < 0:
		return fmt.Errorf("--max-key-bytes must be at least 1 and --max-value-bytes at least 0")
	case int64(c.MaxKeyBytes)+int64(c.MaxValueBytes) > txlog.MaxRecordBytes-entryOverhead:
		// Larger entries would be refused by the log at every write.
		return fmt.Errorf("--max-key-bytes plus --max-value-bytes may be at most %d (the transaction log's largest record, less room for the entry's framing)", txlog.MaxRecordBytes-entryOverhead)
	case !(c.ClientRate >= 0) || math.IsInf(c.ClientRate, 1) || c.ClientBurst < 0:
		return fmt.Errorf("--client-rate and --client-burst must be at least 0 (0: no limit, one second's worth)")
	case c.RateIdentities < 1:
		return fmt.Errorf("--client-rate-identities must be at least 1")
	case c.PprofListen != "" && !loopbackAddr(c.PprofListen):
		return fmt.Errorf("--pprof-listen must be a loopback address such as 127.0.0.1:6060, not %q: profiles hold keys and values", c.PprofListen)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("--request-timeout must be positive")
	case c.SnapshotLogRatio < 0 || c.SnapshotMinLog < 1:
		return fmt.Errorf("--snapshot-log-ratio must be at least 0 and --snapshot-min-log-bytes at least 1")
	case c.SegmentBytes < 0 || c.SegmentBytes > 0 && c.SegmentBytes < 64<<10:
		return fmt.Errorf("--log-segment-bytes must be 0 (fitted to the volume) or at least 65536")
	}
	switch c.Bootstrap {
	case clusterapi.BootstrapAuto, clusterapi.BootstrapAlways, clusterapi.BootstrapNever:
	default:
		return fmt.Errorf("--bootstrap must be %s, %s or %s, not %q", clusterapi.BootstrapAuto, clusterapi.BootstrapAlways, clusterapi.BootstrapNever, c.Bootstrap)
	}
	switch c.Log {
	case logRaft:
	case logPostgres:
		if err := c.postgres().Validate(); err != nil {
			return fmt.Errorf("--log=postgres: %w (--postgres-* flags, TLOG_DB_* variables)", err)
		}
		if c.RestoreFrom != "" || c.RecoverAlone != "" {
			return fmt.Errorf("--restore-from and --recover-alone are for --log=raft: a postgres store is restored with PostgreSQL's own tools")
		}
	default:
		return fmt.Errorf("--log must be %s or %s, not %q", logRaft, logPostgres, c.Log)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	return nil
}

// loopbackAddr reports whether addr is host:port with a loopback IP
// address or "localhost" as its host.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
