package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/cluster"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

func TestInstrumentAndExport(t *testing.T) {
	m := New()
	m.WatchNode(func() cluster.Status { return cluster.Status{State: "Leader", AppliedIndex: 7, LogBytes: 99} }, func() int { return 3 })
	m.WatchCertificate("api", func() time.Time { return time.Unix(1700000000, 0) })
	m.WatchCertificate("peer", func() time.Time { return time.Unix(1700000001, 0) })
	h := m.Instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusCreated)
			return
		}
		_, _ = w.Write([]byte("ok")) // implicit 200
	}))
	m.Throttled(throttle.Identity{Key: "client:app", Client: "app"})
	m.Throttled(throttle.Identity{Key: "client:app", Client: "app"})
	m.Throttled(throttle.Identity{Key: "addr:10.9.8.7", Addr: "10.9.8.7"})
	for _, method := range []string{"PUT", "GET", "GET", "BREW"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, "/v1/key/secret-key", nil))
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := string(body)
	for _, want := range []string{
		`kvnode_http_requests_total{code="201",method="PUT"} 1`,
		`kvnode_http_requests_total{code="200",method="GET"} 2`,
		`kvnode_http_requests_total{code="200",method="other"} 1`,
		`kvnode_raft_applied_index 7`,
		`kvnode_raft_state{state="Leader"} 1`,
		`kvnode_txlog_bytes 99`,
		`kvnode_keys 3`,
		`kvnode_tls_certificate_not_after_timestamp_seconds{cert="api"} 1.7e+09`,
		`kvnode_tls_certificate_not_after_timestamp_seconds{cert="peer"} 1.700000001e+09`,
		`kvnode_throttled_requests_total{by="client",client="app"} 2`,
		`kvnode_throttled_requests_total{by="address",client=""} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(out, "secret-key") {
		t.Fatal("a key leaked into a label")
	}
	if strings.Contains(out, "10.9.8.7") {
		t.Fatal("a client's address is a label: anyone could add values")
	}
}
