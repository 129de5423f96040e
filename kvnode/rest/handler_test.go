package rest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/cluster"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/rest"
)

// newServer runs the API on a real single-node Raft cluster.
func newServer(t *testing.T, limits core.Limits) *httptest.Server {
	t.Helper()
	st := core.NewStore()
	n, err := cluster.Open(cluster.Config{NodeID: "n0", DataDir: t.TempDir(), PeerBind: "127.0.0.1:0", Bootstrap: true, Fast: true}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	svc := core.NewService(st, n, limits)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, err := svc.Get(ctx, "x", core.Linearizable); errors.Is(err, core.ErrNoSuchKey) {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("no leader: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv := httptest.NewServer(rest.Deadline(2*time.Second, rest.NewRouter(svc, nil, nil)))
	t.Cleanup(srv.Close)
	return srv
}

type call struct {
	method, path, body string
	status             int
	respBody           string
	header             map[string]string
}

func do(t *testing.T, srv *httptest.Server, c call) {
	t.Helper()
	req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != c.status {
		t.Fatalf("%s %s = %d %q, want %d", c.method, c.path, resp.StatusCode, b, c.status)
	}
	if c.respBody != "" && string(b) != c.respBody {
		t.Fatalf("%s %s body = %q, want %q", c.method, c.path, b, c.respBody)
	}
	for k, v := range c.header {
		if got := resp.Header.Get(k); got != v {
			t.Fatalf("%s %s header %s = %q, want %q", c.method, c.path, k, got, v)
		}
	}
}

// The book's curl session (chapter 5), through its own /v1/{key} path.
func TestBookCurlSession(t *testing.T) {
	srv := newServer(t, core.DefaultLimits)
	for _, c := range []call{
		{method: "PUT", path: "/v1/key-a", body: "Hello, key-value store!", status: 201},
		{method: "GET", path: "/v1/key-a", status: 200, respBody: "Hello, key-value store!", header: map[string]string{"Content-Type": "application/octet-stream"}},
		{method: "PUT", path: "/v1/key-a", body: "Hello, again, key-value store!", status: 201},
		{method: "GET", path: "/v1/key-a", status: 200, respBody: "Hello, again, key-value store!"},
		{method: "GET", path: "/v1/key-b", status: 404},
		{method: "DELETE", path: "/v1/key-a", status: 200},
		{method: "DELETE", path: "/v1/key-a", status: 200},
		{method: "GET", path: "/v1/key-a", status: 404},
	} {
		do(t, srv, c)
	}
}

func TestStatusCodes(t *testing.T) {
	srv := newServer(t, core.Limits{MaxKeyBytes: 16, MaxValueBytes: 8})
	for _, c := range []call{
		{method: "PUT", path: "/v1/key/a/b//c", body: "v", status: 201},
		{method: "GET", path: "/v1/key/a/b//c", status: 200, respBody: "v"},
		{method: "GET", path: "/v1/key/a%2Fb%2F%2Fc", status: 200, respBody: "v"},
		{method: "PUT", path: "/v1/key/%00%FF%20", body: "", status: 201},
		{method: "GET", path: "/v1/key/%00%FF%20", status: 200, respBody: ""},
		{method: "HEAD", path: "/v1/key/a/b//c", status: 200},
		{method: "POST", path: "/v1/key/a", status: 405, header: map[string]string{"Allow": "GET, HEAD, PUT, DELETE"}},
		{method: "PATCH", path: "/v1/a", status: 405, header: map[string]string{"Allow": "GET, HEAD, PUT, DELETE"}},
		{method: "PUT", path: "/v1/key/k", body: "123456789", status: 413},
		{method: "GET", path: "/v1/key/k", status: 404}, // the rejected write left nothing
		{method: "PUT", path: "/v1/key/" + strings.Repeat("k", 17), body: "v", status: 414},
		{method: "GET", path: "/v1/key/" + strings.Repeat("k", 17), status: 414},
		{method: "PUT", path: "/v1/key/", body: "v", status: 400},
		{method: "GET", path: "/v1/key/a/b//c?consistency=bogus", status: 400},
		{method: "GET", path: "/v1/key/a/b//c?consistency=stale", status: 200, respBody: "v"},
		{method: "GET", path: "/v1/keys?limit=0", status: 400},
		{method: "DELETE", path: "/v1/keys", status: 405, header: map[string]string{"Allow": "GET, HEAD"}},
	} {
		do(t, srv, c)
	}
}

func TestChunkedBodyOverTheLimitWritesNothing(t *testing.T) {
	srv := newServer(t, core.Limits{MaxKeyBytes: 16, MaxValueBytes: 8})
	// No Content-Length: the limit is found while reading.
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/key/k", io.MultiReader(strings.NewReader("12345"), strings.NewReader("67890")))
	req.ContentLength = -1
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
	do(t, srv, call{method: "GET", path: "/v1/key/k", status: 404})
}

type brokenBody struct{ sent bool }

func (b *brokenBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("connection reset by client")
}

func TestBrokenBodyWritesNothing(t *testing.T) {
	srv := newServer(t, core.DefaultLimits)
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/key/k", &brokenBody{})
	req.ContentLength = 1000 // the client promises more than it sends
	resp, err := srv.Client().Do(req)
	if err == nil {
		resp.Body.Close()
	}
	do(t, srv, call{method: "GET", path: "/v1/key/k", status: 404})
}

func TestListPagination(t *testing.T) {
	srv := newServer(t, core.DefaultLimits)
	for _, k := range []string{"user/1", "user/2", "user/3", "other"} {
		do(t, srv, call{method: "PUT", path: "/v1/key/" + k, body: "v", status: 201})
	}
	var keys []string
	after := ""
	for i := 0; i < 5; i++ {
		resp, err := srv.Client().Get(srv.URL + "/v1/keys?prefix=user/&limit=2&after=" + after)
		if err != nil {
			t.Fatal(err)
		}
		var page keyapi.ListPage
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		keys = append(keys, page.Keys...)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if strings.Join(keys, ",") != "user/1,user/2,user/3" {
		t.Fatalf("listed %v", keys)
	}
}

func TestShedRefusesOverTheBound(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	srv := httptest.NewServer(rest.Shed(1, 2*time.Second, slow))
	defer srv.Close()
	go func() {
		if resp, err := srv.Client().Get(srv.URL); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(release)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || !bytes.Contains(body, []byte("overloaded")) {
		t.Fatalf("second request: %d Retry-After=%q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// consistencyKV records the consistency each read asks for.
type consistencyKV struct{ got []core.Consistency }

func (k *consistencyKV) Put(context.Context, string, []byte) error { return nil }
func (k *consistencyKV) Delete(context.Context, string) error      { return nil }
func (k *consistencyKV) Limits() core.Limits                       { return core.DefaultLimits }
func (k *consistencyKV) Get(_ context.Context, _ string, c core.Consistency) ([]byte, error) {
	k.got = append(k.got, c)
	return []byte("v"), nil
}
func (k *consistencyKV) List(_ context.Context, _, _ string, _ int, c core.Consistency) ([]string, string, error) {
	k.got = append(k.got, c)
	return nil, "", nil
}

// ?consistency= takes linearizable (the default), strict or stale, on a
// key and on the key list; anything else is a 400 that names the three.
func TestConsistencyParameter(t *testing.T) {
	kv := &consistencyKV{}
	srv := httptest.NewServer(rest.NewRouter(kv, nil, nil))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		query string
		want  core.Consistency
	}{
		{"", core.Linearizable},
		{"?consistency=linearizable", core.Linearizable},
		{"?consistency=strict", core.Strict},
		{"?consistency=stale", core.Stale},
	} {
		for _, path := range []string{"/v1/key/k", "/v1/keys"} {
			kv.got = nil
			do(t, srv, call{method: "GET", path: path + c.query, status: 200})
			if len(kv.got) != 1 || kv.got[0] != c.want {
				t.Errorf("GET %s%s asked for consistency %v, want %v", path, c.query, kv.got, c.want)
			}
		}
	}
	for _, path := range []string{"/v1/key/k", "/v1/keys"} {
		kv.got = nil
		do(t, srv, call{method: "GET", path: path + "?consistency=serializable", status: 400,
			respBody: "consistency must be linearizable (the default), strict or stale, not \"serializable\"\n"})
		if len(kv.got) != 0 {
			t.Errorf("GET %s with a bad consistency reached the store", path)
		}
	}
}

// fullKV is a store whose volume is full: PUTs are refused, the rest works.
type fullKV struct{}

func (fullKV) Put(context.Context, string, []byte) error { return core.ErrNoSpace }
func (fullKV) Delete(context.Context, string) error      { return nil }
func (fullKV) Get(context.Context, string, core.Consistency) ([]byte, error) {
	return []byte("v"), nil
}
func (fullKV) List(context.Context, string, string, int, core.Consistency) ([]string, string, error) {
	return nil, "", nil
}
func (fullKV) Limits() core.Limits { return core.DefaultLimits }

// A PUT refused for want of space is 507 Insufficient Storage with one
// line saying so, not a 500 nor a 503 that invites retrying at once.
func TestFullVolumeIs507(t *testing.T) {
	srv := httptest.NewServer(rest.NewRouter(fullKV{}, nil, nil))
	defer srv.Close()
	do(t, srv, call{method: "PUT", path: "/v1/key/k", body: "v", status: http.StatusInsufficientStorage, respBody: core.ErrNoSpace.Error() + "\n"})
	do(t, srv, call{method: "GET", path: "/v1/key/k", status: http.StatusOK, respBody: "v"})
	do(t, srv, call{method: "DELETE", path: "/v1/key/k", status: http.StatusOK})
}
