// Package throttle owns per-client rate limiting of a kvnode's client
// API (book chapter 9, "throttling"): a token bucket for each client
// identity, the certificate's client name when the client authenticated
// and the remote IP otherwise, held in a least-recently-used table of
// bounded size.
//
// It answers "may this identity make one more request now, and if not,
// when?"; it knows nothing of HTTP, so that any API can use it (REST
// answers 429 with Retry-After, package rest; gRPC would answer
// ResourceExhausted). It is distinct from load shedding (rest.Shedder):
// shedding protects the node from the sum of all clients and answers
// 503; throttling keeps one client to its share and answers 429.
//
// The limits are per node: a client that spreads its requests over the
// members of a store of three may make three times its rate in all.
//
// No goroutine refills the buckets: a bucket remembers its tokens and
// when it last counted them, and adds rate × elapsed time at its next
// request.
package throttle

import (
	"container/list"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
)

// DefaultMaxIdentities bounds the table when Config.MaxIdentities is 0.
// An entry is a few hundred bytes, so the table stays within a few MB.
const DefaultMaxIdentities = 10000

// Limit is a token bucket's shape.
type Limit struct {
	// Rate is the tokens added per second: the sustained requests per
	// second. Zero (or less) is unlimited.
	Rate float64
	// Burst is the bucket's capacity: the requests an idle client may
	// make at once. Zero is one second's worth of Rate, at least 1.
	Burst int
}

// Unlimited reports whether l admits every request.
func (l Limit) Unlimited() bool { return !(l.Rate > 0) || math.IsInf(l.Rate, 1) }

// resolved returns l with Burst set: what a bucket of l holds when full.
func (l Limit) resolved() Limit {
	if l.Burst <= 0 && !l.Unlimited() {
		l.Burst = int(max(1, math.Ceil(min(l.Rate, math.MaxInt32))))
	}
	return l
}

// String is "100/s (burst 200)", or "unlimited".
func (l Limit) String() string {
	if l.Unlimited() {
		return "unlimited"
	}
	l = l.resolved()
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + "/s (burst " + strconv.Itoa(l.Burst) + ")"
}

// Override is l with a client's own settings where it has them (the rules
// file, access.Client). A client's own rate comes with its own burst:
// one second of that rate unless it sets a burst too; a burst alone keeps
// the store's rate. A rate of 0 of its own makes the client unlimited.
func (l Limit) Override(rate *float64, burst *int) Limit {
	if rate != nil {
		l = Limit{Rate: *rate}
	}
	if burst != nil && *burst > 0 {
		l.Burst = *burst
	}
	return l.resolved()
}

// Config configures a Limiter.
type Config struct {
	// Default is every identity's limit unless its client sets its own.
	// The zero Limit admits everything: throttling is off by default.
	Default Limit
	// MaxIdentities bounds the identities remembered; 0 is
	// DefaultMaxIdentities.
	MaxIdentities int
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Limiter is a token bucket per identity in an LRU table. It is safe for
// concurrent use.
//
// When the table is full, the identity used least recently is forgotten.
// If it comes back it starts with a full bucket, as a new one does. That
// is acceptable: the entry forgotten is the one idle longest, which
// usually had refilled anyway; and an attacker who cycles through more
// addresses than the table holds, to have its own entries evicted, gains
// at most one burst per eviction, which it could have had by being a new
// address, while the table, and so the memory, stays the same size
// whatever it sends. Named clients are few (the rules name them), so
// their entries stay in a table of this size unless they fall idle.
type Limiter struct {
	def Limit
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *bucket
	lru     list.List                // front: used most recently
}

type bucket struct {
	id     string
	tokens float64
	last   time.Time // when tokens was counted
}

// New returns a Limiter.
func New(c Config) *Limiter {
	l := &Limiter{def: c.Default.resolved(), max: c.MaxIdentities, now: c.Now}
	if l.max <= 0 {
		l.max = DefaultMaxIdentities
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.entries = make(map[string]*list.Element, min(l.max, 1024))
	return l
}

// Default is the limit of identities without their own.
func (l *Limiter) Default() Limit { return l.def }

// Allow takes a token from id's bucket under the default limit. When
// there is none it reports how long until there is one; the refused
// request takes nothing.
func (l *Limiter) Allow(id string) (ok bool, retryAfter time.Duration) {
	return l.AllowLimit(id, l.def)
}

// AllowLimit is Allow under lim, the limit of id's client. A bucket
// follows a change of its limit at its next request: it refills at the
// new rate and holds at most the new burst.
func (l *Limiter) AllowLimit(id string, lim Limit) (ok bool, retryAfter time.Duration) {
	if lim.Unlimited() {
		return true, 0
	}
	lim = lim.resolved()
	capacity := float64(lim.Burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.bucket(id, now, capacity)
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens += elapsed.Seconds() * lim.Rate
		b.last = now
	}
	b.tokens = min(b.tokens, capacity)
	if b.tokens >= 1-epsilon {
		b.tokens--
		return true, 0
	}
	wait := (1 - b.tokens) / lim.Rate // seconds until one token
	// Whole microseconds, rounded up, less float noise: a wait of
	// 60.00000000000001s is a minute, not 61s once in whole seconds.
	return false, time.Duration(math.Ceil(wait*1e6-1e-3)) * time.Microsecond
}

// epsilon absorbs float noise in the tokens: 60s at 1/60 per second is
// one token, even when the sum comes to 0.9999999999999999.
const epsilon = 1e-9

// bucket returns id's bucket, made full when id is new, and marks it
// used. l.mu is held.
func (l *Limiter) bucket(id string, now time.Time, capacity float64) *bucket {
	if e, ok := l.entries[id]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	for l.lru.Len() >= l.max {
		oldest := l.lru.Back()
		l.lru.Remove(oldest)
		delete(l.entries, oldest.Value.(*bucket).id)
	}
	b := &bucket{id: id, tokens: capacity, last: now}
	l.entries[id] = l.lru.PushFront(b)
	return b
}

// Len is the number of identities remembered (at most the bound).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// RetryAfterSeconds is a wait as the whole seconds of a Retry-After
// header: rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	return int(max(1, math.Ceil(d.Seconds())))
}

// Guard says which client a TLS connection belongs to: rest.Guard,
// access.Policy.
type Guard interface {
	Identify(cs *tls.ConnectionState) (access.Client, error)
}

// Identity is who a request is counted against.
type Identity struct {
	// Key names the bucket: "client:<name>" or "addr:<ip>", so that no
	// client name can share an address's bucket.
	Key string
	// Client is the authenticated client's name; empty when the request
	// is counted by its address.
	Client string
	// Addr is the remote IP when the request is counted by it.
	Addr string
	// own are the client's own settings from the rules.
	rate  *float64
	burst *int
}

// Identify returns who a request over cs from remoteAddr (host:port, as
// net/http's Request.RemoteAddr and gRPC's peer address give it) is
// counted against: the client g names, or, when g is nil or names none
// (no certificate, or one it refuses), the remote IP without the port.
// It also returns what g said, so that the caller can authorize the
// request without verifying the certificate chain a second time.
func Identify(g Guard, cs *tls.ConnectionState, remoteAddr string) (Identity, access.Client, error) {
	var c access.Client
	var err error
	if g != nil {
		c, err = g.Identify(cs)
		if err == nil {
			return Identity{Key: "client:" + c.Name, Client: c.Name, rate: c.RequestsPerSecond, burst: c.Burst}, c, nil
		}
	}
	host, _, splitErr := net.SplitHostPort(remoteAddr)
	if splitErr != nil {
		host = remoteAddr // no port: a Unix socket or a test
	}
	return Identity{Key: "addr:" + host, Addr: host}, c, err
}

// Who names the identity in a message: `client "app"` or the address.
func (id Identity) Who() string {
	if id.Client != "" {
		return fmt.Sprintf("client %q", id.Client)
	}
	return id.Addr
}

// LimitOf is id's limit: the default, with its client's own settings
// where it has them.
func (l *Limiter) LimitOf(id Identity) Limit {
	return l.def.Override(id.rate, id.burst)
}

// Decision is the answer to one request.
type Decision struct {
	OK         bool
	RetryAfter time.Duration // when refused: until the bucket holds a token
	Identity   Identity
	Limit      Limit
}

// Admit takes a token from id's bucket under its limit.
func (l *Limiter) Admit(id Identity) Decision {
	lim := l.LimitOf(id)
	ok, wait := l.AllowLimit(id.Key, lim)
	return Decision{OK: ok, RetryAfter: wait, Identity: id, Limit: lim}
}

// Reason is the one-line reason of a refusal, e.g. `too many requests:
// client "app" is over its rate of 100/s (burst 200); retry after 1s`.
func (d Decision) Reason() string {
	return fmt.Sprintf("too many requests: %s is over its rate of %s; retry after %ds", d.Identity.Who(), d.Limit, RetryAfterSeconds(d.RetryAfter))
}
