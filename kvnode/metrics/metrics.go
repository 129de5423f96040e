// Package metrics owns the node's Prometheus metrics: HTTP requests by
// method and code with latency histograms, transaction-log append and
// fsync latency, log size, the expiry of the TLS certificates, the disk budget (full or not, free, capacity
// and reserved bytes), the Raft state and indexes, and the requests
// throttled. Nothing here carries a key or a value as a label, nor a
// client's address.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	"github.com/kvstore-operator/kvstore-operator/kvnode/cluster"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

// Metrics is the node's registry.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	appendDur prometheus.Histogram
	appendN   prometheus.Histogram
	syncDur   prometheus.Histogram
	rpcs      *prometheus.CounterVec
	rpcDur    *prometheus.HistogramVec
	throttled *prometheus.CounterVec
}

// New creates the registry with the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvnode_http_requests_total", Help: "HTTP requests by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvnode_http_request_duration_seconds", Help: "HTTP request latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
		}, []string{"method"}),
		appendDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvnode_txlog_append_duration_seconds", Help: "Time from a log append to its entries being durable.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		appendN: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvnode_txlog_append_entries", Help: "Entries per log append (Raft batches concurrent writes).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		syncDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvnode_txlog_fsync_duration_seconds", Help: "fdatasync latency of the transaction log.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvnode_throttled_requests_total",
			Help: "Key API requests refused with 429 because their client was over its rate, by what the client was counted as: by=\"client\" with the client's name (from the rules: as many values as spec.clients has), or by=\"address\" for requests without an accepted client certificate (the address itself is no label: anyone could add values).",
		}, []string{"by", "client"}),
	}
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvnode_grpc_requests_total", Help: "gRPC calls by method and status code.",
	}, []string{"method", "code"})
	m.rpcDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kvnode_grpc_request_duration_seconds", Help: "gRPC call latency by method.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
	}, []string{"method"})
	m.reg.MustRegister(m.rpcs, m.rpcDur)
	// The series without a name exists from the start, so that a rate()
	// over it is 0, not absent, before the first refusal.
	m.throttled.WithLabelValues("address", "")
	m.reg.MustRegister(m.requests, m.latency, m.appendDur, m.appendN, m.syncDur, m.throttled,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveAppend implements txlog.Observer.
func (m *Metrics) ObserveAppend(entries int, d time.Duration) {
	m.appendDur.Observe(d.Seconds())
	m.appendN.Observe(float64(entries))
}

// ObserveSync implements txlog.Observer.
func (m *Metrics) ObserveSync(d time.Duration) { m.syncDur.Observe(d.Seconds()) }

// WatchNode exports the node's Raft state, indexes and log size, read at
// scrape time.
func (m *Metrics) WatchNode(status func() cluster.Status, keys func() int) {
	gauge := func(name, help string, f func(cluster.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(status()) })
	}
	m.reg.MustRegister(
		gauge("kvnode_raft_term", "Current Raft term.", func(s cluster.Status) float64 { return float64(s.Term) }),
		gauge("kvnode_raft_commit_index", "Highest log index known to be committed.", func(s cluster.Status) float64 { return float64(s.CommitIndex) }),
		gauge("kvnode_raft_applied_index", "Highest log index applied to the store.", func(s cluster.Status) float64 { return float64(s.AppliedIndex) }),
		gauge("kvnode_raft_last_index", "Last index in the log.", func(s cluster.Status) float64 { return float64(s.LastIndex) }),
		gauge("kvnode_raft_leader", "1 when this node is the leader.", func(s cluster.Status) float64 { return b2f(s.State == "Leader") }),
		gauge("kvnode_txlog_bytes", "Bytes of records in the transaction log.", func(s cluster.Status) float64 { return float64(s.LogBytes) }),
		keysGauge(keys),
	)
	storage := func(name, help string, f func(*clusterapi.StorageStatus) float64) prometheus.Collector {
		return gauge(name, help, func(s cluster.Status) float64 {
			if s.Storage == nil {
				return 0
			}
			return f(s.Storage)
		})
	}
	m.reg.MustRegister(
		storage("kvnode_storage_full", "1 while the node refuses PUTs (507) because its volume is full; reads and DELETEs are still served.", func(s *clusterapi.StorageStatus) float64 { return b2f(s.Full) }),
		storage("kvnode_storage_free_bytes", "Free bytes of the data directory's volume.", func(s *clusterapi.StorageStatus) float64 { return float64(s.FreeBytes) }),
		storage("kvnode_storage_capacity_bytes", "Size of the data directory's volume.", func(s *clusterapi.StorageStatus) float64 { return float64(s.CapacityBytes) }),
		storage("kvnode_storage_reserve_bytes", "Bytes the node keeps free for its next snapshot, the log until then, DELETEs and Raft's own writes: PUTs are refused when they would use them.", func(s *clusterapi.StorageStatus) float64 { return float64(s.ReserveBytes) }),
	)
	states := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kvnode_raft_state", Help: "1 for the node's current Raft state."}, []string{"state"})
	m.reg.MustRegister(stateCollector{states: states, status: status})
}

// WatchPostgres exports a Postgres-mode node's place in the log, read at
// scrape time: the head it has seen, what it applied, and whether the
// circuit to PostgreSQL is open.
func (m *Metrics) WatchPostgres(status func() (head, applied uint64, open bool), keys func() int) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		gauge("kvnode_pglog_head_sequence", "Highest log sequence this node has seen committed in postgres.", func() float64 { h, _, _ := status(); return float64(h) }),
		gauge("kvnode_pglog_applied_sequence", "Last log sequence applied to the store.", func() float64 { _, a, _ := status(); return float64(a) }),
		gauge("kvnode_pglog_circuit_open", "1 while postgres is taken to be unreachable (calls fail at once; not ready).", func() float64 { _, _, o := status(); return b2f(o) }),
		keysGauge(keys),
	)
}

func keysGauge(keys func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvnode_keys", Help: "Keys in the store."}, func() float64 { return float64(keys()) })
}

// WatchCertificate exports the expiry of a TLS certificate the node
// serves with (cert names which: api or peer), read at scrape time from
// the reloader, so that it shows the certificate actually in use: one the
// operator renewed but the node failed to load still counts down.
func (m *Metrics) WatchCertificate(cert string, notAfter func() time.Time) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "kvnode_tls_certificate_not_after_timestamp_seconds",
		Help:        "Expiry (Unix time) of the TLS certificate the node serves with.",
		ConstLabels: prometheus.Labels{"cert": cert},
	}, func() float64 { return float64(notAfter().Unix()) }))
}

type stateCollector struct {
	states *prometheus.GaugeVec
	status func() cluster.Status
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { c.states.Describe(ch) }
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.status().State
	for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		c.states.WithLabelValues(s).Set(b2f(s == cur))
	}
	c.states.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Throttled counts a request refused for its client's rate (the callback
// of rest.Throttle).
func (m *Metrics) Throttled(id throttle.Identity) {
	if id.Client != "" {
		m.throttled.WithLabelValues("client", id.Client).Inc()
		return
	}
	m.throttled.WithLabelValues("address", "").Inc()
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Instrument counts and times every request through next.
func (m *Metrics) Instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPost:
		default:
			method = "other" // bounded label values whatever clients send
		}
		m.requests.WithLabelValues(method, strconv.Itoa(rec.code)).Inc()
		m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	})
}

// ObserveRPC implements grpcapi.Observer: the REST metrics' shape for
// gRPC calls. Only registered methods reach it, so the labels are bounded.
func (m *Metrics) ObserveRPC(fullMethod string, code codes.Code, d time.Duration) {
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.rpcDur.WithLabelValues(method).Observe(d.Seconds())
}

type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
