package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// KV is what the API needs from the store.
type KV = core.KV

const keyMethods = "GET, HEAD, PUT, DELETE"

// Guard says who a request's client is (access.Policy).
type Guard = access.Guard

// API serves the key-value routes.
type API struct {
	kv     KV
	logger *slog.Logger
	guard  Guard
}

// NewRouter returns the router for /v1/. A nil guard admits every
// request (--client-auth=none).
func NewRouter(kv KV, logger *slog.Logger, guard Guard) *mux.Router {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &API{kv: kv, logger: logger, guard: guard}
	r := mux.NewRouter()
	// Keys may hold any byte, "/" and escaped characters included: route on
	// the escaped path and unescape the key ourselves.
	// "//" and "." are key bytes too: no path cleaning or redirects.
	r.UseEncodedPath()
	r.SkipClean(true)
	r.HandleFunc(keyapi.PathKeys, a.list).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(keyapi.PathKeys, methodNotAllowed("GET, HEAD"))
	r.HandleFunc(keyapi.PathKeyPrefix, func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusBadRequest, core.ErrEmptyKey.Error())
	})
	for _, p := range []string{keyapi.PathKeyPrefix + "{key:.+}", "/v1/{key:.+}"} {
		r.HandleFunc(p, a.get).Methods(http.MethodGet, http.MethodHead)
		r.HandleFunc(p, a.put).Methods(http.MethodPut)
		r.HandleFunc(p, a.delete).Methods(http.MethodDelete)
		r.HandleFunc(p, methodNotAllowed(keyMethods))
	}
	return r
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allow))
	}
}

// key returns the unescaped key of the request.
func key(r *http.Request) (string, error) {
	k, err := url.PathUnescape(mux.Vars(r)["key"])
	if err != nil {
		return "", fmt.Errorf("key is not a valid escaped path: %w", err)
	}
	return k, nil
}

func (a *API) put(w http.ResponseWriter, r *http.Request) {
	k, err := key(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.authorized(w, r, access.Write, k) {
		return
	}
	limit := a.kv.Limits().MaxValueBytes
	if r.ContentLength > int64(limit) {
		a.fail(w, r, fmt.Errorf("%w: %d bytes, the limit is %d", core.ErrValueTooLarge, r.ContentLength, limit))
		return
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.fail(w, r, fmt.Errorf("%w: the limit is %d bytes", core.ErrValueTooLarge, limit))
			return
		}
		// The client went away or sent a broken body: nothing is written.
		writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
		return
	}
	if err := a.kv.Put(r.Context(), k, value); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	k, err := key(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.authorized(w, r, access.Read, k) {
		return
	}
	c, err := consistency(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := a.kv.Get(r.Context(), k, c)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(v)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(v)
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	k, err := key(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.authorized(w, r, access.Write, k) {
		return
	}
	if err := a.kv.Delete(r.Context(), k); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get(keyapi.QueryPrefix)
	if a.guard != nil {
		c, err := a.identify(r)
		if err == nil {
			prefix, err = c.ListPrefix(prefix)
		}
		if err != nil {
			refuse(w, err)
			return
		}
	}
	limit := keyapi.DefaultListLimit
	if s := q.Get(keyapi.QueryLimit); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > keyapi.MaxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", keyapi.MaxListLimit))
			return
		}
		limit = n
	}
	c, err := consistency(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	keys, next, err := a.kv.List(r.Context(), prefix, q.Get(keyapi.QueryAfter), limit, c)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if keys == nil {
		keys = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(keyapi.ListPage{Keys: keys, Next: next})
}

// authorized checks that the request's client may do op on key, and
// answers the request when it may not.
func (a *API) authorized(w http.ResponseWriter, r *http.Request, op access.Op, key string) bool {
	if a.guard == nil {
		return true
	}
	c, err := a.identify(r)
	if err == nil {
		err = c.Allows(op, key)
	}
	if err != nil {
		refuse(w, err)
		return false
	}
	return true
}

// identify asks the guard who r's client is, unless Throttle already
// did for this request. a.guard is not nil.
func (a *API) identify(r *http.Request) (access.Client, error) {
	if id, ok := r.Context().Value(identifiedKey{}).(identified); ok {
		return id.client, id.err
	}
	return a.guard.Identify(r.TLS)
}

// refuse answers a request access refused: 401 when the client is not
// known, 403 when it is but may not do this. Not logged: anyone who
// reaches the port could fill the log; the metrics count them by status.
func refuse(w http.ResponseWriter, err error) {
	code := http.StatusForbidden
	if errors.Is(err, access.ErrUnauthenticated) {
		code = http.StatusUnauthorized
	}
	writeError(w, code, err.Error())
}

func consistency(r *http.Request) (core.Consistency, error) {
	switch v := keyapi.Consistency(r.URL.Query().Get(keyapi.QueryConsistency)); v {
	case "", keyapi.Linearizable:
		return core.Linearizable, nil
	case keyapi.Strict:
		return core.Strict, nil
	case keyapi.Stale:
		return core.Stale, nil
	default:
		return 0, fmt.Errorf("consistency must be linearizable (the default), strict or stale, not %q", v)
	}
}

// fail writes the response for a failed call.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, retry := statusFor(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client is gone; there is nobody to answer
	}
	if code >= 500 && code != http.StatusInsufficientStorage {
		// Never log the key: it may be personal data. A full volume is
		// logged once by the node, not at every refused PUT.
		a.logger.Warn("request failed", "method", r.Method, "status", code, "error", err.Error())
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry/time.Second)))
	}
	if (r.Method == http.MethodPut || r.Method == http.MethodDelete) && outcomeUnknown(err) {
		w.Header().Set(keyapi.HeaderOutcome, keyapi.OutcomeUnknown)
	}
	writeError(w, code, err.Error())
}

// outcomeUnknown reports whether a failed write may have been applied.
func outcomeUnknown(err error) bool {
	return errors.Is(err, core.ErrIndeterminate) || errors.Is(err, context.DeadlineExceeded)
}

// statusFor maps an error from the store to an HTTP status and, for
// transient failures, how long a client should wait before retrying.
func statusFor(err error) (int, time.Duration) {
	switch {
	case errors.Is(err, core.ErrNoSuchKey):
		return http.StatusNotFound, 0
	case errors.Is(err, core.ErrEmptyKey):
		return http.StatusBadRequest, 0
	case errors.Is(err, core.ErrKeyTooLarge):
		return http.StatusRequestURITooLong, 0
	case errors.Is(err, core.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge, 0
	case errors.Is(err, core.ErrNoSpace):
		// Not 503: the node is up, and retrying at once will not help
		// until space is freed. Nothing was written.
		return http.StatusInsufficientStorage, 0
	case errors.Is(err, core.ErrNotLeader), errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrIndeterminate):
		return http.StatusServiceUnavailable, time.Second
	case errors.Is(err, context.DeadlineExceeded):
		// The request's deadline passed while waiting for a leader or a
		// quorum; a write's outcome is unknown, so the client may retry it
		// (PUT and DELETE are idempotent).
		return http.StatusServiceUnavailable, time.Second
	}
	return http.StatusInternalServerError, 0
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, strings.ReplaceAll(msg, "\n", " "))
}
