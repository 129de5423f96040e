// Package client is the Go client of a KeyValueStore, for users' programs
// and for kvctl: Get, Put, Delete and List over the REST API or gRPC
// (Config.Protocol), with TLS and mutual TLS from the files of a client
// Secret, a timeout on every call, and retries of what is safe to retry.
//
// Reads are retried after answers that say "try again" (503, 429, 502,
// 504) and after transport errors; writes only when they certainly were
// not applied (a write whose outcome is unknown, sent again, could
// overwrite a write acknowledged in between: ErrIndeterminate). Retries
// wait with exponential backoff and full jitter, never less than the
// server's Retry-After, and never past the call's deadline. Answers that
// will not change (400, 401, 403, 404, 413, 414, 507) are returned at
// once.
//
// With Config.LeaderWrites, writes go straight to the member that leads,
// as the store names it on its answers to writes, and not through a
// follower that would forward them.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// The files of a client Secret (<store>-client-<name>), as mounted in a pod.
const (
	FileCA   = "ca.crt"
	FileCert = "tls.crt"
	FileKey  = "tls.key"
)

// Defaults of a Config.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 6
	DefaultBaseBackoff = 50 * time.Millisecond
	DefaultMaxBackoff  = 2 * time.Second
	// DefaultMaxValueBytes bounds what a read takes from the server: a
	// node's limit on values is 1 MiB unless set higher (at most 64 MiB).
	DefaultMaxValueBytes = 64 << 20
)

// maxErrorBytes bounds the message of an error answer that is read.
const maxErrorBytes = 4 << 10

// maxRetryAfter bounds, in seconds, the wait a server may ask for.
const maxRetryAfter = 60

// Config says where a store is and how to reach it.
type Config struct {
	// Endpoints are base URLs of the store, e.g. the Service
	// "https://demo.default.svc:8080" or several members. A call that
	// cannot reach one, or is told to come back later, tries the next.
	Endpoints []string
	// TLSDir holds the files of a client Secret: FileCA, and FileCert with
	// FileKey for mutual TLS. Files set below take precedence.
	TLSDir string
	// CAFile is the CA bundle that signs the store's certificates; empty
	// trusts the system's roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key.
	CertFile, KeyFile string
	// Timeout bounds every call, retries included, when its context has
	// no earlier deadline (DefaultTimeout when 0; negative: none).
	Timeout time.Duration
	// MaxAttempts is how often a call is sent at most (DefaultMaxAttempts
	// when 0; 1 turns retries off).
	MaxAttempts int
	// BaseBackoff and MaxBackoff shape the backoff before attempt n:
	// a random time in [0, min(MaxBackoff, BaseBackoff·2ⁿ)).
	BaseBackoff, MaxBackoff time.Duration
	// MaxValueBytes bounds a value or a list page read from the server
	// (DefaultMaxValueBytes when 0).
	MaxValueBytes int64
	// Transport replaces the HTTP transport built from the TLS settings
	// (tests, proxies).
	Transport http.RoundTripper
	// Protocol is REST (the default, port 8080) or GRPC (port 50051).
	// An endpoint's scheme says whether TLS is used: https or http.
	Protocol Protocol
	// LeaderWrites sends Put and Delete straight to the member that leads,
	// as the store names it on the answers to writes (keyapi.HeaderLeader),
	// rather than to Endpoints: a write then makes no hop from a follower
	// to the leader. Reads still go to Endpoints. Until the store has named
	// a leader, and whenever the leader cannot be reached or is told to
	// come back later, writes go to Endpoints as usual. The leader must be
	// reachable at the address the members know it by (in Kubernetes, the
	// pod's name under the store's headless Service), with the same TLS.
	LeaderWrites bool
}

// Protocol is the front end a client talks to.
type Protocol string

const (
	REST Protocol = "rest"
	GRPC Protocol = "grpc"
)

// Client calls a store. It is safe for concurrent use.
type Client struct {
	cfg       Config
	endpoints []*url.URL
	http      *http.Client
	grpc      []pb.KeyValueClient // one per endpoint, with Protocol GRPC
	conns     []*grpc.ClientConn
	next      atomic.Uint32 // the endpoint to try first

	// leader is where writes go, with Config.LeaderWrites, once the store
	// has named it; nil: to the endpoints.
	leader atomic.Pointer[leaderTarget]
	// benched is a leader that failed a write: it is not followed again
	// until its time is up.
	benched atomic.Pointer[benchedLeader]
	tls     *tls.Config
	// leaderConns are the gRPC connections to leaders, by scheme and
	// address, kept until Close (calls may be in flight on an older one).
	leaderMu    sync.Mutex
	leaderConns map[string]*grpc.ClientConn
	closed      bool
}

// leaderTarget is a leader that writes go to: its API URL (REST) or its
// gRPC address and client.
type leaderTarget struct {
	url    *url.URL
	addr   string
	secure bool // gRPC: with TLS
	kv     pb.KeyValueClient
	since  time.Time
}

func (t *leaderTarget) key() string {
	if t.url != nil {
		return t.url.String()
	}
	return t.addr
}

type benchedLeader struct {
	key   string
	until time.Time
}

const (
	// maxLeaderConns bounds the gRPC connections kept to leaders: a store
	// that names more than this many leaders in a client's life gets its
	// writes through the endpoints from then on.
	maxLeaderConns = 16
	// leaderFor is how long a leader is written to before the client
	// asks the endpoints again: a member that named a wrong leader (a bug,
	// a stale address) does not hold the client's writes for good.
	leaderFor = 30 * time.Second
	// benchFor is how long a leader that failed a write sits out.
	benchFor = 30 * time.Second
)

// target is where one attempt of a call goes: endpoint i, or the leader.
type target struct {
	i      int
	leader *leaderTarget
}

// New checks cfg and reads its files.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: no endpoint (e.g. https://demo.default.svc:8080)")
	}
	c := &Client{cfg: cfg}
	for _, e := range cfg.Endpoints {
		u, err := url.Parse(strings.TrimSuffix(e, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("client: endpoint %q: want http(s)://host:port", e)
		}
		c.endpoints = append(c.endpoints, u)
	}
	if c.cfg.Timeout == 0 {
		c.cfg.Timeout = DefaultTimeout
	}
	if c.cfg.MaxAttempts <= 0 {
		c.cfg.MaxAttempts = DefaultMaxAttempts
	}
	if c.cfg.BaseBackoff <= 0 {
		c.cfg.BaseBackoff = DefaultBaseBackoff
	}
	if c.cfg.MaxBackoff <= 0 {
		c.cfg.MaxBackoff = DefaultMaxBackoff
	}
	if c.cfg.MaxValueBytes <= 0 {
		c.cfg.MaxValueBytes = DefaultMaxValueBytes
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.tls = tc
	switch cfg.Protocol {
	case "", REST:
	case GRPC:
		if err := c.dialGRPC(); err != nil {
			return nil, err
		}
		return c, nil
	default:
		return nil, fmt.Errorf("client: protocol %q: want %q or %q", cfg.Protocol, REST, GRPC)
	}
	rt := cfg.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 5 * time.Second,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	// Redirects are not followed: the key API never sends one, and a body
	// must not be sent again to an address nobody configured.
	c.http = &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	ca, cert, key := cfg.CAFile, cfg.CertFile, cfg.KeyFile
	if cfg.TLSDir != "" {
		if ca == "" {
			ca = filepath.Join(cfg.TLSDir, FileCA)
		}
		// A Secret of the store's CA alone (the ConfigMap <store>-ca
		// mounted) has no key pair: the client then goes without one.
		if cert == "" && key == "" {
			if _, err := os.Stat(filepath.Join(cfg.TLSDir, FileCert)); err == nil {
				cert, key = filepath.Join(cfg.TLSDir, FileCert), filepath.Join(cfg.TLSDir, FileKey)
			}
		}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("client: CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA bundle %s holds no PEM certificate", ca)
		}
		tc.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("client: a client certificate needs both its certificate and its key file")
	}
	if cert != "" {
		// Read at every handshake: the operator renews the Secret's
		// certificate, and the kubelet updates the mounted files.
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			return nil, fmt.Errorf("client: client certificate: %w", err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			return &pair, nil
		}
	}
	return tc, nil
}

// ErrNotFound is returned (wrapped in an *Error) by Get of a missing key.
var ErrNotFound = errors.New("no such key")

// ErrIndeterminate is returned (wrapped) by a Put or Delete that may or
// may not have been applied. It is not retried: when others write the
// same key, sending it again could overwrite a write acknowledged in
// between (a lost update). The caller knows whether that matters: read
// the key back, or write again.
var ErrIndeterminate = errors.New("the write may or may not have been applied")

// Error is an answer of the store that is not a success.
type Error struct {
	// Status is the HTTP status; over gRPC, the status REST answers in
	// the same case (NotFound: 404, Unavailable: 503, ...).
	Status int
	// Code is the gRPC code, over gRPC.
	Code       codes.Code
	Message    string        // the store's one-line reason
	RetryAfter time.Duration // what the store asked to wait, if anything
	// Indeterminate: a failed write that may have been applied
	// (keyapi.HeaderOutcome; over gRPC, DeadlineExceeded or a connection
	// that broke during the call). errors.Is(err, ErrIndeterminate).
	Indeterminate bool
}

func (e *Error) Error() string {
	if e.Code != codes.OK {
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), msg)
}

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		// Only the key API's own 404: a node with its REST front end off
		// answers 501.
		return e.Status == http.StatusNotFound
	case ErrIndeterminate:
		return e.Indeterminate
	}
	return false
}

// Temporary reports whether the same call may succeed later.
func (e *Error) Temporary() bool {
	switch e.Status {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ReadOption changes a read.
type ReadOption func(*readOptions)

type readOptions struct{ consistency keyapi.Consistency }

// WithConsistency chooses a read's consistency (keyapi.Linearizable when
// not given).
func WithConsistency(c keyapi.Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
}

func reads(opts []ReadOption) readOptions {
	var o readOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o readOptions) query(q url.Values) url.Values {
	if o.consistency != "" && o.consistency != keyapi.Linearizable {
		q.Set(keyapi.QueryConsistency, string(o.consistency))
	}
	return q
}

func (o readOptions) pb() pb.Consistency {
	switch o.consistency {
	case keyapi.Strict:
		return pb.Consistency_CONSISTENCY_STRICT
	case keyapi.Stale:
		return pb.Consistency_CONSISTENCY_STALE
	}
	return pb.Consistency_CONSISTENCY_UNSPECIFIED
}

// Get returns the value of key; errors.Is(err, ErrNotFound) when it has
// none.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) ([]byte, error) {
	o := reads(opts)
	return c.do(ctx, false, func(ctx context.Context, t target) ([]byte, error) {
		if c.grpc != nil {
			r, err := c.grpc[t.i].Get(ctx, &pb.GetRequest{Key: key, Consistency: o.pb()})
			return r.GetValue(), fromGRPC(err)
		}
		return c.once(ctx, c.endpoints[t.i], http.MethodGet, keyapi.KeyPath(key), o.query(url.Values{}), nil, http.StatusOK)
	})
}

// Put sets key to value. It returns once the write is durable on a quorum.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := c.do(ctx, true, func(ctx context.Context, t target) ([]byte, error) {
		if c.grpc != nil {
			var md metadata.MD
			_, err := c.grpcFor(t).Put(ctx, &pb.PutRequest{Key: key, Value: value}, grpc.Header(&md))
			c.noteGRPCLeader(t, md)
			return nil, fromGRPC(err)
		}
		return c.once(ctx, c.urlFor(t), http.MethodPut, keyapi.KeyPath(key), nil, value, http.StatusCreated)
	})
	return err
}

// Delete removes key; deleting a missing key succeeds.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.do(ctx, true, func(ctx context.Context, t target) ([]byte, error) {
		if c.grpc != nil {
			var md metadata.MD
			_, err := c.grpcFor(t).Delete(ctx, &pb.DeleteRequest{Key: key}, grpc.Header(&md))
			c.noteGRPCLeader(t, md)
			return nil, fromGRPC(err)
		}
		return c.once(ctx, c.urlFor(t), http.MethodDelete, keyapi.KeyPath(key), nil, nil, http.StatusOK)
	})
	return err
}

// List returns a page of at most limit keys (keyapi.DefaultListLimit when
// 0) that start with prefix and sort after after, in order. Pass the
// page's Next as after for the next page.
func (c *Client) List(ctx context.Context, prefix, after string, limit int, opts ...ReadOption) (keyapi.ListPage, error) {
	o := reads(opts)
	var page keyapi.ListPage
	_, err := c.do(ctx, false, func(ctx context.Context, t target) ([]byte, error) {
		if c.grpc != nil {
			r, err := c.grpc[t.i].List(ctx, &pb.ListRequest{Prefix: prefix, After: after, Limit: int32(min(limit, keyapi.MaxListLimit+1)), Consistency: o.pb()})
			if err == nil {
				page = keyapi.ListPage{Keys: r.GetKeys(), Next: r.GetNext()}
			}
			return nil, fromGRPC(err)
		}
		q := url.Values{}
		if prefix != "" {
			q.Set(keyapi.QueryPrefix, prefix)
		}
		if after != "" {
			q.Set(keyapi.QueryAfter, after)
		}
		if limit != 0 {
			q.Set(keyapi.QueryLimit, strconv.Itoa(limit))
		}
		b, err := c.once(ctx, c.endpoints[t.i], http.MethodGet, keyapi.PathKeys, o.query(q), nil, http.StatusOK)
		if err != nil {
			return nil, err
		}
		page = keyapi.ListPage{}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, &Error{Status: http.StatusBadGateway, Message: "a list page that is not JSON: " + err.Error()}
		}
		return nil, nil
	})
	if page.Keys == nil {
		page.Keys = []string{}
	}
	return page, err
}

// do sends the call until it succeeds, fails for good, runs out of
// attempts or reaches its deadline. call sends it once, to the target
// (a write goes to the leader, with Config.LeaderWrites, once known). A
// write is sent again only when it certainly was not applied.
func (c *Client) do(ctx context.Context, write bool, call func(ctx context.Context, t target) ([]byte, error)) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	var last error
	leaderTried := false
	for attempt := 0; attempt < c.cfg.MaxAttempts; attempt++ {
		if attempt > 0 {
			wait := c.backoff(attempt, last)
			if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
				return nil, fmt.Errorf("%w (gave up: the call's deadline comes before the next attempt)", last)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("%w (then: %w)", last, ctx.Err())
			case <-t.C:
			}
		}
		i := int(c.next.Load()) % len(c.endpoints)
		t := target{i: i}
		if write && c.cfg.LeaderWrites && !leaderTried {
			t.leader = c.currentLeader()
		}
		b, err := call(ctx, t)
		if err == nil {
			return b, nil
		}
		last = err
		if t.leader != nil {
			// The leader could not take the write (it may lead no more,
			// or be out of this client's reach): it sits out for a
			// while, and the write goes to the endpoints, which name a
			// leader again, if it certainly was not applied: refused
			// before it was sent (a certificate or handshake refused),
			// or retryable. The attempt does not count: a client whose
			// leader is out of reach is no worse off than one without
			// LeaderWrites.
			leaderTried = true
			c.dropLeader(t.leader)
			if ctx.Err() == nil && (refusedBeforeSent(err) || retryable(err, write)) {
				attempt--
				continue
			}
		}
		if ctx.Err() != nil || !retryable(err, write) {
			if write && isTransport(err) && !notSent(err) {
				return nil, fmt.Errorf("%w: %w", ErrIndeterminate, err)
			}
			return nil, err
		}
		// This endpoint could not serve it now: the next attempt goes to
		// the next one (another member, when several are configured).
		c.next.CompareAndSwap(uint32(i), uint32((i+1)%len(c.endpoints)))
	}
	return nil, fmt.Errorf("%w (after %d attempts)", last, c.cfg.MaxAttempts)
}

// retryable says whether a failed attempt may be sent again: a read after
// any temporary failure, a write only when it certainly was not applied.
func retryable(err error, write bool) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Temporary() && (!write || !e.Indeterminate)
	}
	if !isTransport(err) {
		return false // a certificate refused, an answer too large: no change
	}
	return !write || notSent(err)
}

// isTransport reports whether err is the network's (not the store's
// answer, not a certificate check).
func isTransport(err error) bool {
	var netErr net.Error
	var x509Err x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &x509Err), errors.As(err, &hostErr), errors.As(err, &certErr):
		return false
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return true
	}
	return false
}

// refusedBeforeSent reports whether err says that the request never left:
// a connection that could not be made, or a TLS handshake that failed (a
// certificate refused), over either protocol.
func refusedBeforeSent(err error) bool {
	var x509Err x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	var e *Error
	switch {
	case notSent(err), errors.As(err, &x509Err), errors.As(err, &hostErr), errors.As(err, &certErr):
		return true
	case errors.As(err, &e):
		return e.Code == codes.Unavailable && !e.Indeterminate && e.RetryAfter == 0
	}
	return false
}

// notSent reports whether a transport error came before any byte of the
// request left: the connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// backoff is the wait before attempt n (n ≥ 1): full jitter over an
// exponentially growing window, but at least what the server asked for.
func (c *Client) backoff(n int, last error) time.Duration {
	window := c.cfg.MaxBackoff
	if n < 31 {
		if w := c.cfg.BaseBackoff << (n - 1); w > 0 && w < window {
			window = w
		}
	}
	wait := rand.N(window)
	var e *Error
	if errors.As(last, &e) && e.RetryAfter > wait {
		wait = e.RetryAfter
	}
	return wait
}

func (c *Client) once(ctx context.Context, base *url.URL, method, path string, q url.Values, body []byte, want int) ([]byte, error) {
	u := *base
	u.Path = ""
	u.RawPath = ""
	full := u.String() + path
	if len(q) > 0 {
		full += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, full, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	c.noteRESTLeader(base, resp.Header.Get(keyapi.HeaderLeader))
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		e := &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(msg)), Indeterminate: resp.Header.Get(keyapi.HeaderOutcome) == keyapi.OutcomeUnknown}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(min(s, maxRetryAfter)) * time.Second
		}
		return nil, e
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxValueBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > c.cfg.MaxValueBytes {
		return nil, fmt.Errorf("client: the answer is larger than MaxValueBytes (%d)", c.cfg.MaxValueBytes)
	}
	return b, nil
}

// dialGRPC makes a connection per endpoint. grpc connects lazily and
// reconnects by itself; a failed connection is an Unavailable call.
func (c *Client) dialGRPC() error {
	for _, u := range c.endpoints {
		cc, err := c.dial(u.Host, u.Scheme == "https")
		if err != nil {
			_ = c.Close()
			return fmt.Errorf("client: endpoint %s: %w", u, err)
		}
		c.conns = append(c.conns, cc)
		c.grpc = append(c.grpc, pb.NewKeyValueClient(cc))
	}
	return nil
}

// currentLeader is the leader that writes go to, nil when they go to the
// endpoints.
func (c *Client) currentLeader() *leaderTarget {
	t := c.leader.Load()
	if t != nil && time.Since(t.since) > leaderFor {
		c.leader.CompareAndSwap(t, nil)
		return nil
	}
	return t
}

// dropLeader sends the writes back to the endpoints after t failed one,
// and keeps the store's hints from naming t again for a while.
func (c *Client) dropLeader(t *leaderTarget) {
	c.leader.CompareAndSwap(t, nil)
	c.benched.Store(&benchedLeader{key: t.key(), until: time.Now().Add(benchFor)})
}

// isBenched reports whether key names a leader that failed a write lately.
func (c *Client) isBenched(key string) bool {
	b := c.benched.Load()
	return b != nil && b.key == key && time.Now().Before(b.until)
}

// Leader is where writes go, with Config.LeaderWrites: the leader's API
// URL (REST) or gRPC address, as the store last named it; "" while writes
// go to the endpoints.
func (c *Client) Leader() string {
	t := c.leader.Load()
	if t == nil {
		return ""
	}
	return t.key()
}

func (c *Client) urlFor(t target) *url.URL {
	if t.leader != nil && t.leader.url != nil {
		return t.leader.url
	}
	return c.endpoints[t.i]
}

func (c *Client) grpcFor(t target) pb.KeyValueClient {
	if t.leader != nil && t.leader.kv != nil {
		return t.leader.kv
	}
	return c.grpc[t.i]
}

// noteRESTLeader follows the leader's API URL that the member at from
// named, if it is a URL of the same scheme: a store reached over HTTPS
// never sends a client's writes over plain HTTP.
func (c *Client) noteRESTLeader(from *url.URL, hint string) {
	if !c.cfg.LeaderWrites || hint == "" {
		return
	}
	if t := c.leader.Load(); t != nil && t.url != nil && t.url.String() == hint {
		return
	}
	u, err := url.Parse(hint)
	if err != nil || u.Scheme != from.Scheme || !reachable(u.Host) || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return
	}
	u.Path = ""
	if c.isBenched(u.String()) {
		return
	}
	c.leader.Store(&leaderTarget{url: u, since: time.Now()})
}

// noteGRPCLeader follows the leader's gRPC address in the response header
// of a call to t, with TLS when that call had it.
func (c *Client) noteGRPCLeader(t target, md metadata.MD) {
	if !c.cfg.LeaderWrites {
		return
	}
	v := md.Get(keyapi.MetadataLeader)
	if len(v) == 0 || v[0] == "" {
		return
	}
	addr := v[0]
	secure := c.endpoints[t.i].Scheme == "https"
	if t.leader != nil {
		secure = t.leader.secure
	}
	if l := c.leader.Load(); l != nil && l.addr == addr && l.secure == secure {
		return
	}
	if !reachable(addr) || c.isBenched(addr) {
		return
	}
	key := "http://" + addr
	if secure {
		key = "https://" + addr
	}
	c.leaderMu.Lock()
	defer c.leaderMu.Unlock()
	if c.closed {
		return
	}
	cc := c.leaderConns[key]
	if cc == nil {
		if len(c.leaderConns) >= maxLeaderConns {
			return
		}
		var err error
		if cc, err = c.dial(addr, secure); err != nil {
			return
		}
		if c.leaderConns == nil {
			c.leaderConns = map[string]*grpc.ClientConn{}
		}
		c.leaderConns[key] = cc
	}
	c.leader.Store(&leaderTarget{addr: addr, secure: secure, kv: pb.NewKeyValueClient(cc), since: time.Now()})
}

// dial makes a gRPC connection to addr (host:port), with the client's TLS
// when secure.
func (c *Client) dial(addr string, secure bool) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if secure {
		creds = credentials.NewTLS(c.tls)
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(int(min(c.cfg.MaxValueBytes+64<<10, 1<<30)))))
}

// reachable reports whether hostport names a host a client can dial: not
// empty, not an unspecified address (0.0.0.0, ::) that a node listening
// on every interface might advertise.
func reachable(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" || port == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsUnspecified()
}

// Close releases the client's connections.
func (c *Client) Close() error {
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.leaderMu.Lock()
	for _, cc := range c.leaderConns {
		_ = cc.Close()
	}
	c.leaderConns = nil
	c.closed = true
	c.leaderMu.Unlock()
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
	return nil
}

// fromGRPC makes a gRPC status an *Error with the status REST would have
// answered, so that both protocols are retried alike.
func fromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.Canceled {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			e.RetryAfter = min(ri.GetRetryDelay().AsDuration(), maxRetryAfter*time.Second)
		}
	}
	switch st.Code() {
	case codes.NotFound:
		e.Status = http.StatusNotFound
	case codes.InvalidArgument, codes.OutOfRange:
		e.Status = http.StatusBadRequest
	case codes.Unauthenticated:
		e.Status = http.StatusUnauthorized
	case codes.PermissionDenied:
		e.Status = http.StatusForbidden
	case codes.ResourceExhausted:
		// With a delay: over a rate, come back (429). Without: a full
		// volume or a message over a bound, which waiting does not fix.
		e.Status = http.StatusInsufficientStorage
		if e.RetryAfter > 0 {
			e.Status = http.StatusTooManyRequests
		}
	case codes.Unavailable:
		e.Status = http.StatusServiceUnavailable
		// The store's own Unavailable carries RetryInfo (not applied); a
		// connection that could not be made, or whose TLS handshake
		// failed, says so. Anything else is a connection that broke
		// during the call.
		e.Indeterminate = e.RetryAfter == 0 && !strings.Contains(st.Message(), "while dialing") && !strings.Contains(st.Message(), "authentication handshake failed")
	case codes.DeadlineExceeded:
		// The node's deadline (a leader or quorum late, a write that may
		// have been applied); the call's own deadline ends the retries in
		// do.
		e.Status = http.StatusGatewayTimeout
		e.Indeterminate = true
	default:
		e.Status = http.StatusInternalServerError
	}
	return e
}
