package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fakeCluster struct{ err error }

func (f fakeCluster) Ready() error { return f.err }

type reader struct{ err error }

func (r reader) Probe(context.Context) error { return r.err }

func probe(h http.HandlerFunc, target string) (int, string) {
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest("GET", target, nil))
	return rec.Code, rec.Body.String()
}

func TestProbes(t *testing.T) {
	dir := t.TempDir()
	c := &Checker{DataDir: dir, Cluster: fakeCluster{}, Reader: reader{}}
	if code, _ := probe(c.Readyz, "/readyz"); code != 200 {
		t.Fatalf("readyz = %d", code)
	}
	if code, _ := probe(c.Healthz, "/healthz?deep=1"); code != 200 {
		t.Fatalf("deep healthz = %d", code)
	}

	c.Cluster = fakeCluster{errors.New("no leader")}
	if code, body := probe(c.Readyz, "/readyz"); code != 503 || !strings.Contains(body, "no leader") {
		t.Fatalf("readyz without a leader = %d %q", code, body)
	}
	if code, _ := probe(c.Livez, "/livez"); code != 200 {
		t.Fatal("livez must not depend on the cluster")
	}

	c.Cluster = fakeCluster{}
	c.Reader = reader{errors.New("quorum lost")}
	if code, _ := probe(c.Healthz, "/healthz"); code != 200 {
		t.Fatal("shallow healthz must not do the read")
	}
	if code, body := probe(c.Healthz, "/healthz?deep=1"); code != 503 || !strings.Contains(body, "quorum lost") {
		t.Fatalf("deep healthz = %d %q", code, body)
	}

	c.Reader = reader{}
	c.DataDir = filepath.Join(dir, "missing")
	if code, body := probe(c.Readyz, "/readyz"); code != 503 || !strings.Contains(body, "not writable") {
		t.Fatalf("readyz with an unusable data dir = %d %q", code, body)
	}
	c.DataDir = dir
	c.Drain()
	if code, _ := probe(c.Readyz, "/readyz"); code != 503 {
		t.Fatal("readyz while draining must fail")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("probe left files behind: %v", entries)
	}
}

type stuckCluster struct {
	fakeCluster
	live error
}

func (s stuckCluster) Live() error { return s.live }

// /livez fails when the node is stuck for good (so that Kubernetes
// restarts it), and only then: not for a lost leader, not for a full
// disk, which a restart would not cure.
func TestLivezFailsOnlyWhenStuck(t *testing.T) {
	c := &Checker{DataDir: t.TempDir(), Cluster: stuckCluster{fakeCluster{errors.New("no leader")}, nil}}
	if code, _ := probe(c.Livez, "/livez"); code != 200 {
		t.Fatalf("livez of a node without a leader = %d", code)
	}
	c.Cluster = stuckCluster{live: errors.New("transaction log failed: fdatasync: input/output error")}
	if code, body := probe(c.Livez, "/livez"); code != 503 || !strings.Contains(body, "transaction log failed") {
		t.Fatalf("livez of a node whose log failed = %d %q", code, body)
	}
}
