package rest_test

import (
	"crypto/tls"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/rest"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

// guardFunc adapts a function to rest.Guard.
type guardFunc func(*tls.ConnectionState) (access.Client, error)

func (f guardFunc) Identify(cs *tls.ConnectionState) (access.Client, error) { return f(cs) }

// Over its rate a client gets 429 with Retry-After and a one-line reason,
// before the store is touched; the guard verifies each request once, the
// rights are still checked, and another client has its own bucket.
func TestThrottle(t *testing.T) {
	kv := &consistencyKV{}
	one, two := 1, 2
	zero := 0.0
	slow := 0.5
	clients := map[string]access.Client{
		"app":  {Name: "app", Access: access.ReadOnly, Prefix: "app/", RequestsPerSecond: &slow, Burst: &two},
		"ops":  {Name: "ops", Access: access.ReadWrite, RequestsPerSecond: &zero},
		"auto": {Name: "auto", Access: access.ReadWrite, Burst: &one},
	}
	var asked atomic.Int64
	// The TLS state's server name stands in for the certificate.
	guard := guardFunc(func(cs *tls.ConnectionState) (access.Client, error) {
		asked.Add(1)
		if c, ok := clients[cs.ServerName]; ok {
			return c, nil
		}
		return access.Client{}, &access.Error{Kind: access.ErrUnauthenticated, Reason: "no client certificate"}
	})
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 100, Burst: 3}})
	var refused []throttle.Identity
	h := rest.Throttle(l, guard, func(id throttle.Identity) { refused = append(refused, id) })(rest.NewRouter(kv, nil, guard))
	send := func(client, method, path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader("v"))
		r.RemoteAddr = "10.1.2.3:4567"
		r.TLS = &tls.ConnectionState{ServerName: client}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	// app: a burst of 2 of its own, then 429; GETs in its prefix pass,
	// a write is still refused by its rights while it has tokens.
	for i, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/v1/key/app/a", 200}, {"PUT", "/v1/key/app/a", 403}, {"GET", "/v1/key/app/a", 429}, {"GET", "/v1/keys", 429}} {
		asked.Store(0)
		resp := send("app", c.method, c.path)
		body := resp.Body.String()
		if resp.Code != c.want {
			t.Fatalf("app request %d: %s %s = %d %q, want %d", i, c.method, c.path, resp.Code, body, c.want)
		}
		if n := asked.Load(); n != 1 {
			t.Errorf("app request %d: the guard was asked %d times, want once", i, n)
		}
		if c.want == 429 {
			want := `too many requests: client "app" is over its rate of 0.5/s (burst 2); retry after 2s` + "\n"
			if body != want || resp.Header().Get("Retry-After") != "2" || !strings.HasPrefix(resp.Header().Get("Content-Type"), "text/plain") {
				t.Errorf("429: Retry-After %q, %q, want %q", resp.Header().Get("Retry-After"), body, want)
			}
		}
	}
	if len(kv.got) != 1 {
		t.Errorf("the store was read %d times, want once (a 429 must not reach it)", len(kv.got))
	}
	// ops: unlimited of its own.
	for range 50 {
		if resp := send("ops", "GET", "/v1/key/a"); resp.Code != 200 {
			t.Fatalf("ops (unlimited) = %d", resp.Code)
		}
	}
	// auto: the store's rate with a burst of 1 of its own.
	if a, b := send("auto", "GET", "/v1/key/a").Code, send("auto", "GET", "/v1/key/a").Code; a != 200 || b != 429 {
		t.Fatalf("auto: %d then %d, want 200 then 429", a, b)
	}
	// Without a certificate: counted by address, after a 401 each.
	for i, want := range []int{401, 401, 401, 429} {
		if got := send("", "GET", "/v1/key/a").Code; got != want {
			t.Fatalf("anonymous request %d = %d, want %d", i, got, want)
		}
	}
	var who []string
	for _, id := range refused {
		who = append(who, id.Who())
	}
	if got := strings.Join(who, ","); got != `client "app",client "app",client "auto",10.1.2.3` {
		t.Errorf("refusals reported: %s", got)
	}

	// Without a guard (--client-auth=none) by address too.
	h = rest.Throttle(throttle.New(throttle.Config{Default: throttle.Limit{Rate: 1, Burst: 1}}), nil, nil)(rest.NewRouter(kv, nil, nil))
	for i, want := range []int{200, 429} {
		r := httptest.NewRequest("GET", "/v1/key/a", nil)
		r.RemoteAddr = "10.1.2.3:1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want || want == 429 && w.Header().Get("Retry-After") != "1" {
			t.Fatalf("without a guard, request %d = %d (Retry-After %q), want %d", i, w.Code, w.Header().Get("Retry-After"), want)
		}
	}
}
