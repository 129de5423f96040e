package rest

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Shed bounds the requests in flight. A request over the bound is refused
// at once with 503 and Retry-After rather than queued, so a node under
// more load than it can serve stays fast for the requests it accepts
// (load shedding, book chapter 9). Mount probes outside of it.
func Shed(maxInFlight int, retryAfter time.Duration, next http.Handler) http.Handler {
	return Shedder(maxInFlight, retryAfter)(next)
}

// Shedder is Shed for several handlers that share one bound: every handler
// it wraps draws on the same maxInFlight slots (the client API and the
// calls members make to each other are one load on one node).
func Shedder(maxInFlight int, retryAfter time.Duration) func(http.Handler) http.Handler {
	if maxInFlight <= 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	slots := make(chan struct{}, maxInFlight)
	retry := strconv.Itoa(max(1, int(retryAfter/time.Second)))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
				next.ServeHTTP(w, r)
			default:
				w.Header().Set("Retry-After", retry)
				writeError(w, http.StatusServiceUnavailable, "overloaded: too many requests in flight, retry later")
			}
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
