package throttle_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// take makes n requests of id and counts those allowed.
func take(l *throttle.Limiter, id string, n int) int {
	ok := 0
	for range n {
		if allowed, _ := l.Allow(id); allowed {
			ok++
		}
	}
	return ok
}

// A new identity gets its burst at once, then nothing until time passes;
// a refused request costs nothing; tokens come back at the rate, never
// beyond the burst.
func TestBurstThenRefusalThenRefill(t *testing.T) {
	c := newClock()
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 10, Burst: 5}, Now: c.Now})
	if got := take(l, "a", 100); got != 5 {
		t.Fatalf("a burst of 5 allowed %d of 100 at once", got)
	}
	c.Advance(100 * time.Millisecond) // one token at 10/s
	if got := take(l, "a", 100); got != 1 {
		t.Fatalf("after 100ms at 10/s: %d allowed, want 1 (refusals must not use tokens)", got)
	}
	c.Advance(250 * time.Millisecond) // 2.5 tokens
	if got := take(l, "a", 100); got != 2 {
		t.Fatalf("after 250ms: %d allowed, want 2", got)
	}
	c.Advance(50 * time.Millisecond) // the half token kept, plus half
	if got := take(l, "a", 100); got != 1 {
		t.Fatalf("after 50ms more: %d allowed, want 1 (fractions of a token carry over)", got)
	}
	c.Advance(time.Hour)
	if got := take(l, "a", 100); got != 5 {
		t.Fatalf("after an hour idle: %d allowed, want the burst of 5 and no more", got)
	}
	// Over a long run the rate holds: 10/s for 10s, in steps of 10ms.
	allowed := 0
	for range 1000 {
		c.Advance(10 * time.Millisecond)
		allowed += take(l, "a", 3)
	}
	if allowed != 100 {
		t.Fatalf("10s at 10/s allowed %d, want 100", allowed)
	}
}

// Retry-After is the time until the next token, rounded up to whole
// seconds, at least 1.
func TestRetryAfter(t *testing.T) {
	c := newClock()
	for _, tc := range []struct {
		lim        throttle.Limit
		advance    time.Duration
		wait       time.Duration
		retryAfter int
	}{
		{throttle.Limit{Rate: 10, Burst: 1}, 0, 100 * time.Millisecond, 1},
		{throttle.Limit{Rate: 10, Burst: 1}, 60 * time.Millisecond, 40 * time.Millisecond, 1},
		{throttle.Limit{Rate: 0.5, Burst: 1}, 0, 2 * time.Second, 2},
		{throttle.Limit{Rate: 0.4, Burst: 1}, 0, 2500 * time.Millisecond, 3},
		{throttle.Limit{Rate: 0.4, Burst: 1}, 2 * time.Second, 500 * time.Millisecond, 1},
		{throttle.Limit{Rate: 1.0 / 60, Burst: 2}, 0, time.Minute, 60},
	} {
		l := throttle.New(throttle.Config{Default: tc.lim, Now: c.Now})
		take(l, "a", tc.lim.Burst) // empty
		c.Advance(tc.advance)
		ok, wait := l.Allow("a")
		if ok || wait < tc.wait-time.Millisecond || wait > tc.wait+time.Millisecond || throttle.RetryAfterSeconds(wait) != tc.retryAfter {
			t.Errorf("%v after %v: ok %v, wait %v (Retry-After %d), want %v (%d)", tc.lim, tc.advance, ok, wait, throttle.RetryAfterSeconds(wait), tc.wait, tc.retryAfter)
		}
		c.Advance(wait)
		if ok, _ := l.Allow("a"); !ok {
			t.Errorf("%v: refused after waiting the time it gave", tc.lim)
		}
	}
	for d, want := range map[time.Duration]int{0: 1, time.Nanosecond: 1, time.Second: 1, time.Second + 1: 2, 1500 * time.Millisecond: 2} {
		if got := throttle.RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

// Identities have buckets of their own.
func TestIdentitiesAreIndependent(t *testing.T) {
	c := newClock()
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 1, Burst: 3}, Now: c.Now})
	if a, b := take(l, "a", 10), take(l, "b", 10); a != 3 || b != 3 {
		t.Fatalf("a %d, b %d allowed; want 3 each", a, b)
	}
}

// The table never holds more identities than its bound, however many
// come; an identity forgotten starts again with a full bucket, and the
// one used last is kept.
func TestLRUBound(t *testing.T) {
	c := newClock()
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 1, Burst: 2}, MaxIdentities: 100, Now: c.Now})
	take(l, "keep", 2)
	for i := range 10000 {
		if ok, _ := l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256)); !ok {
			t.Fatalf("new identity %d refused", i)
		}
		if i%50 == 0 {
			take(l, "keep", 1) // used recently: never the one evicted
		}
		if n := l.Len(); n > 100 {
			t.Fatalf("%d identities remembered, bound 100", n)
		}
	}
	if ok, _ := l.Allow("keep"); ok {
		t.Fatal("an identity in use was forgotten: its empty bucket came back full")
	}
	// The first addresses were evicted long ago: a full bucket again.
	if got := take(l, "10.0.0.0", 10); got != 2 {
		t.Fatalf("an evicted identity allowed %d, want a full bucket of 2", got)
	}
	if n := throttle.New(throttle.Config{}).Len(); n != 0 {
		t.Fatal(n)
	}
}

// The default bound applies when none is given.
func TestDefaultBound(t *testing.T) {
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 1}})
	for i := range throttle.DefaultMaxIdentities + 500 {
		l.Allow(fmt.Sprint(i))
	}
	if n := l.Len(); n != throttle.DefaultMaxIdentities {
		t.Fatalf("%d identities, want the default bound %d", n, throttle.DefaultMaxIdentities)
	}
}

// Unlimited identities take no room in the table.
func TestUnlimited(t *testing.T) {
	l := throttle.New(throttle.Config{})
	if got := take(l, "a", 10000); got != 10000 {
		t.Fatalf("the zero limit allowed %d of 10000", got)
	}
	if l.Len() != 0 {
		t.Fatalf("unlimited identities remembered: %d", l.Len())
	}
}

// Limits as the rules and the flags give them: a burst of 0 is one second
// of the rate; a client's own rate brings its own burst; a rate of 0 of
// its own is unlimited.
func TestLimitOverride(t *testing.T) {
	f, n := func(v float64) *float64 { return &v }, func(v int) *int { return &v }
	def := throttle.Limit{Rate: 100, Burst: 200}
	for _, tc := range []struct {
		name  string
		def   throttle.Limit
		rate  *float64
		burst *int
		want  string
	}{
		{"none of its own", def, nil, nil, "100/s (burst 200)"},
		{"its own rate", def, f(10), nil, "10/s (burst 10)"},
		{"its own fractional rate", def, f(0.5), nil, "0.5/s (burst 1)"},
		{"its own rate and burst", def, f(10), n(30), "10/s (burst 30)"},
		{"its own burst", def, nil, n(5), "100/s (burst 5)"},
		{"a burst of 0 of its own", def, nil, n(0), "100/s (burst 200)"},
		{"unlimited of its own", def, f(0), nil, "unlimited"},
		{"a limit where the store has none", throttle.Limit{}, f(3), nil, "3/s (burst 3)"},
		{"a burst where the store has no rate", throttle.Limit{}, nil, n(5), "unlimited"},
		{"the store's burst of 0", throttle.Limit{Rate: 2.5}, nil, nil, "2.5/s (burst 3)"},
	} {
		if got := tc.def.Override(tc.rate, tc.burst).String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

type guard map[string]access.Client // by the certificate's common name

func (g guard) Identify(cs *tls.ConnectionState) (access.Client, error) {
	if cs == nil || len(cs.ServerName) == 0 {
		return access.Client{}, &access.Error{Kind: access.ErrUnauthenticated, Reason: "no certificate"}
	}
	c, ok := g[cs.ServerName]
	if !ok {
		return access.Client{}, &access.Error{Kind: access.ErrUnauthenticated, Reason: "unknown"}
	}
	return c, nil
}

// Who a request counts against: its client when the guard names one, its
// IP (without the port) otherwise; a client's own limit from the rules.
func TestIdentifyAndAdmit(t *testing.T) {
	rate, burst := 1.0, 2
	g := guard{"app": {Name: "app", RequestsPerSecond: &rate, Burst: &burst}, "ops": {Name: "ops"}}
	as := func(name string) *tls.ConnectionState { return &tls.ConnectionState{ServerName: name} }

	id, c, err := throttle.Identify(g, as("app"), "10.0.0.1:5555")
	if err != nil || c.Name != "app" || id.Key != "client:app" || id.Client != "app" || id.Who() != `client "app"` {
		t.Fatalf("app: %+v %+v %v", id, c, err)
	}
	id2, _, _ := throttle.Identify(g, as("app"), "10.0.0.2:6666")
	if id2.Key != id.Key {
		t.Fatal("a client's identity depends on its address")
	}
	for _, tc := range []struct {
		g    throttle.Guard
		cs   *tls.ConnectionState
		addr string
		key  string
	}{
		{g, nil, "10.0.0.1:5555", "addr:10.0.0.1"},
		{g, as("stranger"), "10.0.0.1:6666", "addr:10.0.0.1"},
		{nil, as("app"), "[fd00::1]:443", "addr:fd00::1"},
		{nil, nil, "@", "addr:@"},
	} {
		id, _, err := throttle.Identify(tc.g, tc.cs, tc.addr)
		if id.Key != tc.key || id.Client != "" || id.Who() != strings.TrimPrefix(tc.key, "addr:") {
			t.Errorf("%v from %s: %+v, want key %s", tc.cs, tc.addr, id, tc.key)
		}
		if tc.g != nil && !errors.Is(err, access.ErrUnauthenticated) {
			t.Errorf("the guard's refusal is not passed on: %v", err)
		}
	}

	clk := newClock()
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 100, Burst: 4}, Now: clk.Now})
	allowed := 0
	var last throttle.Decision
	for range 10 {
		if last = l.Admit(id); last.OK {
			allowed++
		}
	}
	if allowed != 2 || last.OK || last.Limit.String() != "1/s (burst 2)" {
		t.Fatalf("app, at 1/s burst 2 of its own: %d allowed, last %+v", allowed, last)
	}
	if want := `too many requests: client "app" is over its rate of 1/s (burst 2); retry after 1s`; last.Reason() != want {
		t.Errorf("reason %q, want %q", last.Reason(), want)
	}
	ops, _, _ := throttle.Identify(g, as("ops"), "10.0.0.1:1")
	anon, _, _ := throttle.Identify(g, nil, "10.0.0.1:1")
	if a, b := countAdmitted(l, ops, 10), countAdmitted(l, anon, 10); a != 4 || b != 4 {
		t.Fatalf("ops (the default) %d, the address %d allowed; want 4 each, apart from app", a, b)
	}
	if d := l.Admit(anon); d.Reason() != "too many requests: 10.0.0.1 is over its rate of 100/s (burst 4); retry after 1s" {
		t.Errorf("reason %q", d.Reason())
	}
}

func countAdmitted(l *throttle.Limiter, id throttle.Identity, n int) int {
	ok := 0
	for range n {
		if l.Admit(id).OK {
			ok++
		}
	}
	return ok
}

// A change of a client's limit (the rules file reloaded) applies at its
// next request: a smaller burst caps the tokens it has.
func TestLimitChange(t *testing.T) {
	c := newClock()
	l := throttle.New(throttle.Config{Now: c.Now})
	if got := countAllowLimit(l, throttle.Limit{Rate: 1, Burst: 10}, 3); got != 3 {
		t.Fatal(got)
	}
	if got := countAllowLimit(l, throttle.Limit{Rate: 1, Burst: 2}, 10); got != 2 {
		t.Fatalf("after the burst went from 10 to 2: %d allowed, want 2", got)
	}
	c.Advance(time.Second)
	if got := countAllowLimit(l, throttle.Limit{Rate: 1, Burst: 2}, 10); got != 1 {
		t.Fatalf("a second at 1/s: %d allowed, want 1", got)
	}
	// The time since the last request is counted at the rate in force
	// at the next one.
	c.Advance(time.Second)
	if got := countAllowLimit(l, throttle.Limit{Rate: 5, Burst: 10}, 10); got != 5 {
		t.Fatalf("a second, then the rate went from 1 to 5: %d allowed, want 5", got)
	}
}

func countAllowLimit(l *throttle.Limiter, lim throttle.Limit, n int) int {
	ok := 0
	for range n {
		if allowed, _ := l.AllowLimit("a", lim); allowed {
			ok++
		}
	}
	return ok
}

// Many goroutines on shared and own identities, with the clock moving and
// the table evicting: no race (go test -race), and no identity gets more
// than its bucket allows.
func TestConcurrentUse(t *testing.T) {
	c := newClock()
	l := throttle.New(throttle.Config{Default: throttle.Limit{Rate: 1000, Burst: 50}, MaxIdentities: 64, Now: c.Now})
	var shared atomic.Int64
	var wg sync.WaitGroup
	const workers, rounds = 8, 2000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if ok, _ := l.Allow("shared"); ok {
					shared.Add(1)
				}
				l.Allow(fmt.Sprintf("w%d-%d", w, i%100)) // more than the table holds
				if i%100 == 0 {
					c.Advance(10 * time.Millisecond) // 10 tokens at 1000/s
				}
			}
		}()
	}
	wg.Wait()
	// 50 at once plus 10 per step, 20 steps per worker.
	if max := int64(50 + 10*workers*rounds/100); shared.Load() > max || shared.Load() < 50 {
		t.Fatalf("shared allowed %d, want from 50 to %d", shared.Load(), max)
	}
	if l.Len() > 64 {
		t.Fatalf("%d identities, bound 64", l.Len())
	}
}
