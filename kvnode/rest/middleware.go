package rest

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

// Shed bounds the requests in flight. A request over the bound is refused
// at once with 503 and Retry-After rather than queued, so a node under
// more load than it can serve stays fast for the requests it accepts
// (load shedding, book chapter 9). Mount probes outside of it.
func Shed(maxInFlight int, retryAfter time.Duration, next http.Handler) http.Handler {
	return Shedder(shed.New(maxInFlight), retryAfter)(next)
}

// Shedder is Shed for several handlers, and the gRPC API, that share one
// bound: every handler it wraps draws on the same gate (the client APIs
// and the calls members make to each other are one load on one node).
func Shedder(gate *shed.Gate, retryAfter time.Duration) func(http.Handler) http.Handler {
	if gate == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	retry := strconv.Itoa(max(1, int(retryAfter/time.Second)))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !gate.TryEnter() {
				w.Header().Set("Retry-After", retry)
				w.Header().Set(keyapi.HeaderOutcome, keyapi.OutcomeNotApplied)
				writeError(w, http.StatusServiceUnavailable, shed.Message)
				return
			}
			defer gate.Leave()
			next.ServeHTTP(w, r)
		})
	}
}

// Deadline gives every request a context deadline, so a request waiting
// for a leader or a quorum fails in bounded time instead of hanging.
func Deadline(d time.Duration, next http.Handler) http.Handler {
	if d <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Off answers every request 501 with msg: the key routes of a node whose
// REST front end is turned off. Not 404, which a client reads as a
// missing key.
func Off(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotImplemented, msg)
	})
}

// Throttle keeps each client of the key API to its rate (package
// throttle; book chapter 9): a request over it is answered at once with
// 429 Too Many Requests, Retry-After (whole seconds until the client's
// bucket holds a token) and a one-line reason, before its body is read.
// Unlike Shedder's 503 it says nothing about the node: this client is
// asking too often, whatever the others do.
//
// A client is who guard says (nil: nobody is named), or else the remote
// IP. What guard said is handed to the handlers of NewRouter, which must
// have the same guard, so that a certificate chain is verified once per
// request. throttled, when not nil, is told of every refusal (metrics).
// Refusals are not logged: anyone who reaches the port could fill the log.
//
// Mount it on the key API only: probes, the membership API (the
// operator) and the calls members make to each other are never throttled.
func Throttle(l *throttle.Limiter, guard Guard, throttled func(throttle.Identity)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, c, err := throttle.Identify(guard, r.TLS, r.RemoteAddr)
			if guard != nil {
				r = r.WithContext(context.WithValue(r.Context(), identifiedKey{}, identified{c, err}))
			}
			d := l.Admit(id)
			if !d.OK {
				if throttled != nil {
					throttled(id)
				}
				w.Header().Set("Retry-After", strconv.Itoa(throttle.RetryAfterSeconds(d.RetryAfter)))
				writeError(w, http.StatusTooManyRequests, d.Reason())
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// identified is what the guard said of a request's client, once.
type identified struct {
	client access.Client
	err    error
}

type identifiedKey struct{}

// LeaderHint names the leader's API URL (keyapi.HeaderLeader) on the
// successful answers to PUTs and DELETEs, when leader knows it, for
// clients that send their writes straight to the leader. Only a client
// allowed to write learns the members' addresses.
func LeaderHint(leader func() string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut || r.Method == http.MethodDelete {
				w = &hintingWriter{ResponseWriter: w, leader: leader}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// hintingWriter adds the leader to a successful answer's header.
type hintingWriter struct {
	http.ResponseWriter
	leader func() string
	wrote  bool
}

func (h *hintingWriter) WriteHeader(status int) {
	if !h.wrote && status >= 200 && status < 300 {
		if api := h.leader(); api != "" {
			h.Header().Set(keyapi.HeaderLeader, api)
		}
	}
	h.wrote = true
	h.ResponseWriter.WriteHeader(status)
}

func (h *hintingWriter) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (h *hintingWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }
