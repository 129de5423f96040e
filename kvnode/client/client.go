// Package client is the Go client of a KeyValueStore, for users' programs
// and for kvctl: Get, Put, Delete and List over the REST API, with TLS and
// mutual TLS from the files of a client Secret, a timeout on every call,
// and retries of what is safe to retry.
//
// Every call of the API is idempotent (a PUT writes the same value again,
// a DELETE of a missing key succeeds), so a call whose outcome is unknown
// (the connection broke, the deadline passed on the server) may be sent
// again without changing the result. Calls are retried after answers that
// say "try again" (503, 429, 502, 504) and after transport errors, with
// exponential backoff and full jitter, never sooner than the server's
// Retry-After, and never past the call's deadline. Answers that will not
// change (400, 401, 403, 404, 413, 414, 507) are returned at once.
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
	"sync/atomic"
	"time"

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
}

// Client calls a store. It is safe for concurrent use.
type Client struct {
	cfg       Config
	endpoints []*url.URL
	http      *http.Client
	next      atomic.Uint32 // the endpoint to try first
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
	rt := cfg.Transport
	if rt == nil {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
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

// Error is an answer of the store that is not a success.
type Error struct {
	Status     int           // the HTTP status
	Message    string        // the store's one-line reason
	RetryAfter time.Duration // what the store asked to wait, if anything
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), msg)
}

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *Error) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
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
type ReadOption func(q url.Values)

// WithConsistency chooses a read's consistency (keyapi.Linearizable when
// not given).
func WithConsistency(c keyapi.Consistency) ReadOption {
	return func(q url.Values) {
		if c != "" && c != keyapi.Linearizable {
			q.Set(keyapi.QueryConsistency, string(c))
		}
	}
}

// Get returns the value of key; errors.Is(err, ErrNotFound) when it has
// none.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) ([]byte, error) {
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	return c.do(ctx, http.MethodGet, keyapi.KeyPath(key), q, nil, http.StatusOK)
}

// Put sets key to value. It returns once the write is durable on a quorum.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := c.do(ctx, http.MethodPut, keyapi.KeyPath(key), nil, value, http.StatusCreated)
	return err
}

// Delete removes key; deleting a missing key succeeds.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.do(ctx, http.MethodDelete, keyapi.KeyPath(key), nil, nil, http.StatusOK)
	return err
}

// List returns a page of at most limit keys (keyapi.DefaultListLimit when
// 0) that start with prefix and sort after after, in order. Pass the
// page's Next as after for the next page.
func (c *Client) List(ctx context.Context, prefix, after string, limit int, opts ...ReadOption) (keyapi.ListPage, error) {
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
	for _, o := range opts {
		o(q)
	}
	var page keyapi.ListPage
	b, err := c.do(ctx, http.MethodGet, keyapi.PathKeys, q, nil, http.StatusOK)
	if err != nil {
		return page, err
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return page, fmt.Errorf("client: a list page that is not JSON: %w", err)
	}
	return page, nil
}

// do sends the call until it succeeds, fails for good, runs out of
// attempts or reaches its deadline.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, want int) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	var last error
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
		b, err := c.once(ctx, c.endpoints[i], method, path, q, body, want)
		if err == nil {
			return b, nil
		}
		last = err
		var e *Error
		switch {
		case errors.As(err, &e):
			if !e.Temporary() {
				return nil, err
			}
		case ctx.Err() != nil:
			return nil, err
		}
		// This endpoint could not serve it now: the next attempt goes to
		// the next one (another member, when several are configured).
		c.next.CompareAndSwap(uint32(i), uint32((i+1)%len(c.endpoints)))
	}
	return nil, fmt.Errorf("%w (after %d attempts)", last, c.cfg.MaxAttempts)
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
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		e := &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(min(s, 3600)) * time.Second
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
