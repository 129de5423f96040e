package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// script answers each request with the next of its answers and records
// when each request came. The real node's answers are tested in
// cmd/kvnode (TestKvctl); this server gives the failure sequences that a
// real node gives only by chance.
type script struct {
	mu      sync.Mutex
	answers []answer
	times   []time.Time
	paths   []string
	bodies  []string
}

type answer struct {
	status     int
	retryAfter string
	body       string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times = append(s.times, time.Now())
	s.paths = append(s.paths, r.URL.RequestURI())
	s.bodies = append(s.bodies, string(b))
	a := answer{status: http.StatusInternalServerError, body: "script ran out"}
	if len(s.answers) > 0 {
		a, s.answers = s.answers[0], s.answers[1:]
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (s *script) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

func newClient(t *testing.T, cfg client.Config, endpoints ...string) *client.Client {
	t.Helper()
	cfg.Endpoints = endpoints
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A 503 with Retry-After is retried, not sooner than asked, and the write
// then succeeds; the same body is sent each time.
func TestRetriesHonourRetryAfter(t *testing.T) {
	s := &script{answers: []answer{
		{status: 503, retryAfter: "1", body: "no leader is known"},
		{status: 429, body: "over the rate"},
		{status: 201},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := newClient(t, client.Config{BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, srv.URL)
	if err := c.Put(context.Background(), "a/b c", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	if len(s.times) != 3 {
		t.Fatalf("%d requests, want 3", len(s.times))
	}
	if gap := s.times[1].Sub(s.times[0]); gap < time.Second {
		t.Errorf("retried %v after a 503 with Retry-After: 1", gap)
	}
	for i, p := range s.paths {
		if p != "/v1/key/a%2Fb%20c" || s.bodies[i] != "v" {
			t.Errorf("request %d: %s %q", i, p, s.bodies[i])
		}
	}
}

// Answers that will not change are returned at once, with the store's
// reason; a 404 is ErrNotFound.
func TestPermanentErrorsAreNotRetried(t *testing.T) {
	for _, a := range []answer{
		{status: 404, body: "no such key"},
		{status: 403, body: `client "reports" may only read`},
		{status: 401, body: "no client certificate"},
		{status: 413, body: "value too large"},
		{status: 500, body: "internal"},
	} {
		s := &script{answers: []answer{a, {status: 200, body: "v"}}}
		srv := httptest.NewServer(s)
		c := newClient(t, client.Config{BaseBackoff: time.Millisecond}, srv.URL)
		_, err := c.Get(context.Background(), "k")
		srv.Close()
		var e *client.Error
		if !errors.As(err, &e) || e.Status != a.status || e.Message != a.body {
			t.Errorf("%d: got %v", a.status, err)
		}
		if errors.Is(err, client.ErrNotFound) != (a.status == 404) {
			t.Errorf("%d: errors.Is(ErrNotFound) = %v", a.status, a.status != 404)
		}
		if s.requests() != 1 {
			t.Errorf("%d: sent %d times", a.status, s.requests())
		}
	}
}

// A call never outlives its timeout: a Retry-After beyond the deadline
// ends the call with the store's answer instead of sleeping past it.
func TestTimeoutBoundsRetries(t *testing.T) {
	s := &script{}
	for range 100 {
		s.answers = append(s.answers, answer{status: 503, retryAfter: "1", body: "shedding"})
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := newClient(t, client.Config{Timeout: 1500 * time.Millisecond, MaxAttempts: 100}, srv.URL)
	start := time.Now()
	_, err := c.Get(context.Background(), "k")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 503 || e.RetryAfter != time.Second {
		t.Fatalf("got %v", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("took %v with a 1.5s timeout", took)
	}
	if n := s.requests(); n != 2 {
		t.Errorf("%d requests; want 2 (at 0 s and 1 s)", n)
	}
}

// An endpoint that refuses connections is left for the next one; the
// attempts are bounded.
func TestDeadEndpointIsSkipped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	s := &script{answers: []answer{{status: 200, body: `{"keys":["a","b"],"next":"b"}`}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := newClient(t, client.Config{BaseBackoff: time.Millisecond}, dead, srv.URL)
	page, err := c.List(context.Background(), "p/", "a", 2, client.WithConsistency(keyapi.Stale))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Keys) != 2 || page.Next != "b" {
		t.Errorf("page %+v", page)
	}
	if s.paths[0] != "/v1/keys?after=a&consistency=stale&limit=2&prefix=p%2F" {
		t.Errorf("sent %s", s.paths[0])
	}

	only := newClient(t, client.Config{BaseBackoff: time.Millisecond, MaxAttempts: 3}, dead)
	if err := only.Delete(context.Background(), "k"); err == nil {
		t.Fatal("delete through a dead endpoint succeeded")
	}
}

// Bad configurations are refused before any call.
func TestConfigIsChecked(t *testing.T) {
	for _, cfg := range []client.Config{
		{},
		{Endpoints: []string{"demo:8080"}},
		{Endpoints: []string{"https://demo:8080/v1"}},
		{Endpoints: []string{"https://demo:8080"}, CAFile: "/nonexistent/ca.crt"},
		{Endpoints: []string{"https://demo:8080"}, CertFile: "tls.crt"},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// A value larger than the client's bound is refused, not read into memory.
func TestLargeAnswerIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 2048))
	}))
	defer srv.Close()
	c := newClient(t, client.Config{MaxValueBytes: 1024}, srv.URL)
	if _, err := c.Get(context.Background(), "k"); err == nil {
		t.Fatal("a 2 KiB value passed a 1 KiB bound")
	}
}

// hinting answers every write (201, or 200 to a DELETE, or status when it
// fails), naming leader as the leader, and every read 200; it counts them.
type hinting struct {
	mu     sync.Mutex
	leader string
	status int
	writes int
}

func (h *hinting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writes++ // and reads: the leader must get none
	if r.Method == http.MethodGet {
		w.WriteHeader(http.StatusOK)
		return
	}
	if h.leader != "" {
		w.Header().Set(keyapi.HeaderLeader, h.leader)
	}
	status := h.status
	if status == http.StatusCreated && r.Method == http.MethodDelete {
		status = http.StatusOK
	}
	w.WriteHeader(status)
}

func (h *hinting) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.writes
}

// A client with LeaderWrites follows only a leader URL of its endpoints'
// scheme and a host it can dial, and goes back to its endpoints when the
// leader cannot take a write.
func TestLeaderWritesFollowOnlyWhatIsSafe(t *testing.T) {
	leader := &hinting{status: http.StatusCreated}
	ls := httptest.NewServer(leader)
	defer ls.Close()
	member := &hinting{status: http.StatusCreated}
	ms := httptest.NewServer(member)
	defer ms.Close()
	c := newClient(t, client.Config{LeaderWrites: true, MaxAttempts: 3, BaseBackoff: time.Millisecond}, ms.URL)
	ctx := context.Background()
	for _, bad := range []string{
		"https" + ls.URL[len("http"):], // another scheme
		"http://0.0.0.0:8080",          // a node that listens everywhere
		"http://[::]:8080",
		ls.URL + "/elsewhere",
		"::not a url",
	} {
		member.mu.Lock()
		member.leader = bad
		member.mu.Unlock()
		if err := c.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if got := c.Leader(); got != "" {
			t.Errorf("hint %q followed: writes go to %q", bad, got)
		}
	}
	member.mu.Lock()
	member.leader = ls.URL
	member.mu.Unlock()
	if err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if c.Leader() != ls.URL {
		t.Fatalf("writes go to %q, want the leader %s", c.Leader(), ls.URL)
	}
	before := member.count()
	if err := c.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if leader.count() != 1 || member.count() != before {
		t.Errorf("the delete went to the member (%d) rather than the leader (%d)", member.count()-before, leader.count())
	}
	// Reads stay with the endpoints.
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if leader.count() != 1 {
		t.Errorf("a read went to the leader")
	}
	// A leader that says "not now" (nothing applied) loses the writes to
	// the endpoints until a member names a leader again.
	leader.mu.Lock()
	leader.status = http.StatusServiceUnavailable
	leader.mu.Unlock()
	member.mu.Lock()
	member.leader = ""
	member.mu.Unlock()
	if err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("a write the leader refused was not sent to the endpoints: %v", err)
	}
	if c.Leader() != "" {
		t.Errorf("writes still go to %q", c.Leader())
	}
}

// A write the leader may have applied is not sent again anywhere; a
// leader out of reach costs no attempt, and is not followed again for a
// while.
func TestLeaderWritesNeverSendAWriteTwice(t *testing.T) {
	unknown := &script{answers: []answer{{status: http.StatusServiceUnavailable, body: "timed out"}}}
	us := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(keyapi.HeaderOutcome, keyapi.OutcomeUnknown)
		unknown.ServeHTTP(w, r)
	}))
	defer us.Close()
	member := &hinting{status: http.StatusCreated, leader: us.URL}
	ms := httptest.NewServer(member)
	defer ms.Close()
	ctx := context.Background()
	c := newClient(t, client.Config{LeaderWrites: true, BaseBackoff: time.Millisecond}, ms.URL)
	if err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	before := member.count()
	if err := c.Put(ctx, "k", []byte("v2")); !errors.Is(err, client.ErrIndeterminate) {
		t.Fatalf("a write the leader may have applied: %v, want ErrIndeterminate", err)
	}
	if member.count() != before || unknown.requests() != 1 {
		t.Errorf("the write was sent again: %d to the member, %d to the leader", member.count()-before, unknown.requests())
	}
	if c.Leader() != "" {
		t.Errorf("writes still go to %q", c.Leader())
	}

	// A leader nobody can reach: the write goes to the member at once,
	// within one attempt, and the member's naming it again is ignored.
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()
	member.mu.Lock()
	member.leader = goneURL
	member.mu.Unlock()
	c = newClient(t, client.Config{LeaderWrites: true, MaxAttempts: 1}, ms.URL)
	if err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if c.Leader() != goneURL {
		t.Fatalf("writes go to %q, want %s", c.Leader(), goneURL)
	}
	for i := 0; i < 3; i++ {
		if err := c.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatalf("write %d with the leader out of reach: %v", i, err)
		}
		if c.Leader() != "" {
			t.Fatalf("write %d: the leader that failed is followed again", i)
		}
	}
}
