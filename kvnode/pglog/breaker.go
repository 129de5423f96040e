package pglog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// breaker is the book's circuit breaker (chapter 9), kept as state rather
// than as a wrapper: after threshold failures in a row PostgreSQL is taken
// to be unreachable, calls fail at once, and readiness is false, until a
// cool-down has passed. Then one call at a time may try (half-open); its
// success closes the circuit, its failure opens it again for twice as long
// (jittered, capped). Only a failure to reach the server counts: an error
// the server answered with proves it is there.
type breaker struct {
	threshold int
	base, max time.Duration
	now       func() time.Time

	mu       sync.Mutex
	failures int
	cool     time.Duration
	until    time.Time // open until
	trying   bool      // a half-open call is on its way
	last     error
}

func newBreaker() *breaker {
	return &breaker{threshold: 3, base: 500 * time.Millisecond, max: 15 * time.Second, now: time.Now}
}

// errOpen is returned by calls the open circuit refused.
var errOpen = errors.New("postgres unreachable (circuit open)")

// allow reports whether a call may go to the server. A caller that was
// allowed must report its outcome with done.
func (b *breaker) allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
		return nil
	}
	if b.now().Before(b.until) || b.trying {
		return fmt.Errorf("%w: %v", errOpen, b.last)
	}
	b.trying = true
	return nil
}

// done records a call's outcome.
func (b *breaker) done(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trying = false
	if err == nil || !unreachable(err) {
		b.failures, b.cool, b.last = 0, 0, nil
		return
	}
	b.failures++
	b.last = err
	if b.failures >= b.threshold {
		b.cool = min(max(2*b.cool, b.base), b.max)
		// Jitter, so that many nodes do not all try again at once.
		b.until = b.now().Add(b.cool/2 + rand.N(b.cool/2+1))
	}
}

// open reports why calls are refused, or nil while they are not.
func (b *breaker) open() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures >= b.threshold {
		return fmt.Errorf("%w: %v", errOpen, b.last)
	}
	return nil
}

// unreachable reports whether err says the server could not be reached or
// did not answer, as opposed to an answer that was an error (a wrong
// password, a foreign database).
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// The server answered, but is shutting down, starting, or out of
		// connections: as good as unreachable for the next call.
		switch pe.Code {
		case "57P01", "57P02", "57P03", "53300":
			return true
		}
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	var ns notSent
	switch {
	case errors.Is(err, errOpen), errors.Is(err, context.Canceled):
		// A refusal of ours, or a caller that gave up: nothing learnt.
		return false
	case errors.As(err, &ce) && !errors.As(ce.Unwrap(), &pe):
		return true
	case errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	case errors.As(err, &ns):
		return unreachable(ns.error)
	}
	return false
}
