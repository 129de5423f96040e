package rest

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
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

// Off answers every request 404 with msg: the key routes of a node whose
// REST front end is turned off.
func Off(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, msg)
	})
}
