package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// Handler serves the membership admin API (clusterapi.PathCluster and
// below) and the internal calls members make to each other
// (clusterapi.PathInternal and below).
//
//	GET    /v1/cluster                          cluster ID, leader, members with role, address, health, indexes
//	POST   /v1/cluster/bootstrap                start a new cluster with this node (once per cluster; 409 after)
//	POST   /v1/cluster/members                  {"id","address","api"}: add as non-voter
//	POST   /v1/cluster/members/{id}/promote     non-voter to voter, once caught up (409 before)
//	POST   /v1/cluster/members/{id}/demote      voter to non-voter
//	DELETE /v1/cluster/members/{id}             remove
//	POST   /v1/cluster/leader                   {"id"}: transfer leadership (to any voter when id is empty); 200 done, 202 outcome unknown
//	POST   /v1/cluster/snapshot                 take a snapshot now and compact the log
//	GET    /v1/cluster/backup                   stream a backup (package backup); ?local=true from this node, else from the leader
//	POST   /v1/cluster/recover                  {"token"}: after a quorum loss, restart as the whole cluster (once per token)
//
// Every call is idempotent. Changes are made by the leader: another node
// answers 307 with the leader's URL, which HTTP clients follow.
//
// The membership API answers only callers auth.Admin accepts, the internal
// calls only those auth.Peer accepts; others get 403.
func Handler(n *Node, auth Authorizers) http.Handler {
	h := &handler{n: n}
	r := mux.NewRouter()
	admin := r.PathPrefix(clusterapi.PathCluster).Subrouter()
	admin.Use(authorized(auth.Admin))
	// The subrouter's routes are relative to its prefix.
	route := func(path string) string { return strings.TrimPrefix(path, clusterapi.PathCluster) }
	admin.HandleFunc(route(clusterapi.PathCluster), h.info).Methods(http.MethodGet)
	admin.HandleFunc(route(clusterapi.PathBootstrap), h.bootstrap).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathMembers), h.add).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathPromote), h.change(n.Promote)).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathDemote), h.change(n.Demote)).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathMember), h.change(n.Remove)).Methods(http.MethodDelete)
	admin.HandleFunc(route(clusterapi.PathLeader), h.transfer).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathSnapshot), h.snapshot).Methods(http.MethodPost)
	admin.HandleFunc(route(clusterapi.PathBackup), h.backup).Methods(http.MethodGet)
	admin.HandleFunc(route(clusterapi.PathRecover), h.recover).Methods(http.MethodPost)
	// mux joins a subrouter's prefix and its routes with one slash.
	internalPrefix := strings.TrimSuffix(clusterapi.PathInternal, "/")
	internal := r.PathPrefix(internalPrefix).Subrouter()
	internal.Use(authorized(auth.Peer))
	iroute := func(path string) string { return strings.TrimPrefix(path, internalPrefix) }
	internal.HandleFunc(iroute(clusterapi.PathStatus), h.status).Methods(http.MethodGet)
	internal.HandleFunc(iroute(clusterapi.PathReadIndex), h.readIndex).Methods(http.MethodGet)
	internal.HandleFunc(iroute(clusterapi.PathPropose), h.propose).Methods(http.MethodPost)
	internal.HandleFunc(iroute(clusterapi.PathProposeBatch), h.proposeBatch).Methods(http.MethodPost)
	internal.HandleFunc(iroute(clusterapi.PathTerm), h.term).Methods(http.MethodGet)
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

// Authorizers decide who may call the two APIs Handler serves; each
// returns why a request is refused, or nil.
type Authorizers struct {
	// Admin guards the membership API (the operator's admin certificate).
	Admin func(*http.Request) error
	// Peer guards the internal calls: only other members may propose
	// events, confirm read indexes or read a node's status, since a
	// proposal goes straight into the log every replica stores.
	Peer func(*http.Request) error
}

func authorized(authorize func(*http.Request) error) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := authorize(r); err != nil {
				httpError(w, http.StatusForbidden, err.Error())
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

type handler struct{ n *Node }

func (h *handler) info(w http.ResponseWriter, r *http.Request) {
	info, err := h.n.Info(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (h *handler) bootstrap(w http.ResponseWriter, r *http.Request) {
	if err := h.n.Bootstrap(); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterapi.Result{Result: "bootstrapped", ID: h.n.cfg.NodeID})
}

func (h *handler) add(w http.ResponseWriter, r *http.Request) {
	var req clusterapi.AddMemberRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.ID == "" || req.Address == "" {
		httpError(w, http.StatusBadRequest, `body must be {"id":"...","address":"host:port","api":"https://host:port"} with id and address set`)
		return
	}
	if err := h.n.AddNonvoter(r.Context(), req.ID, req.Address, req.API); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterapi.Result{Result: "member is a non-voter", ID: req.ID})
}

func (h *handler) change(op func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := mux.Vars(r)["id"]
		if err := op(r.Context(), id); err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, clusterapi.Result{Result: "ok", ID: id})
	}
}

func (h *handler) transfer(w http.ResponseWriter, r *http.Request) {
	var req clusterapi.TransferRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			httpError(w, http.StatusBadRequest, `body must be {"id":"..."} or empty`)
			return
		}
	}
	err := h.n.TransferLeadership(r.Context(), req.ID)
	switch {
	case errors.Is(err, ErrTransferOutcomeUnknown):
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, clusterapi.TransferResult{Outcome: clusterapi.TransferUnknown, Message: err.Error()})
	case err != nil:
		h.fail(w, r, err)
	default:
		// Name the new leader once it is known.
		writeJSON(w, http.StatusOK, clusterapi.TransferResult{Outcome: clusterapi.TransferDone, Leader: h.n.awaitLeader(2 * time.Second)})
	}
}

func (h *handler) snapshot(w http.ResponseWriter, r *http.Request) {
	if err := h.n.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterapi.Result{Result: "ok"})
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.n.LocalStatus())
}

func (h *handler) term(w http.ResponseWriter, _ *http.Request) {
	if !h.n.vol.get().Admitted {
		// Its current term started again from nothing, below a vote it
		// may have cast on the volume it lost.
		httpError(w, http.StatusServiceUnavailable, "this member's volume is new: its term says nothing of the votes it cast before")
		return
	}
	writeJSON(w, http.StatusOK, clusterapi.TermResponse{ID: h.n.cfg.NodeID, ClusterID: h.n.clusterID(), Term: h.n.votedTerm()})
}

func (h *handler) readIndex(w http.ResponseWriter, r *http.Request) {
	strict := false
	if v := r.URL.Query().Get(clusterapi.QueryStrict); v != "" {
		var err error
		if strict, err = strconv.ParseBool(v); err != nil {
			httpError(w, http.StatusBadRequest, clusterapi.QueryStrict+" must be true or false")
			return
		}
	}
	index, err := h.n.ReadIndex(r.Context(), strict)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, clusterapi.ReadIndexResponse{Index: index, Strict: strict})
}

func (h *handler) propose(w http.ResponseWriter, r *http.Request) {
	// No valid event is larger than this; refusing a larger body before
	// reading it keeps a sender from making the leader buffer it.
	limit := int64(h.n.cfg.Limits.MaxEventBytes())
	if r.ContentLength > limit {
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%v: the body is %d bytes; no event within the limits is over %d", core.ErrValueTooLarge, r.ContentLength, limit))
		return
	}
	cmd, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%v: no event within the limits is over %d bytes", core.ErrValueTooLarge, limit))
			return
		}
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	err = h.n.ProposeLocal(r.Context(), cmd)
	status, unknown := proposeStatus(err)
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	if unknown {
		w.Header().Set(outcomeHeader, keyapi.OutcomeUnknown)
	}
	httpError(w, status, err.Error())
}

// proposeStatus is the answer to a forwarded event that ProposeLocal
// answered with err, and whether the event may have been applied although
// it failed.
func proposeStatus(err error) (status int, unknown bool) {
	switch {
	case err == nil:
		return http.StatusNoContent, false
	// The limits answer as the public API does (rest.statusFor).
	case errors.Is(err, core.ErrKeyTooLarge):
		return http.StatusRequestURITooLong, false
	case errors.Is(err, core.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge, false
	case errors.Is(err, core.ErrCorruptEvent), errors.Is(err, core.ErrEmptyKey):
		return http.StatusBadRequest, false
	case errors.Is(err, core.ErrNoSpace):
		// Refused before it entered the log; the follower's client gets
		// the same 507.
		return http.StatusInsufficientStorage, false
	case errors.Is(err, core.ErrIndeterminate), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, true
	default:
		// Not the leader, or refused before entering the log: not applied.
		return http.StatusServiceUnavailable, false
	}
}

// proposeBatch applies each event of a batch on its own, at once, as if
// each had come in a request of its own to propose: raft gathers them
// into as few log writes as it would have anyway. A body that cannot be
// split is refused whole, before anything is applied.
//
// The load shedder counts a batch as one request, so batches have a bound
// of their own: batchesServed at once (a follower sends one at a time), at
// most clusterapi.MaxBatchBytes of body and clusterapi.MaxBatchEvents
// goroutines each. Every refusal of the batch as a whole says that nothing
// of it was applied (keyapi.OutcomeNotApplied), which the follower needs
// to hear before it retries or sends the writes one by one.
func (h *handler) proposeBatch(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, msg string) {
		w.Header().Set(outcomeHeader, keyapi.OutcomeNotApplied)
		httpError(w, status, msg)
	}
	select {
	case h.n.batchesServed <- struct{}{}:
		defer func() { <-h.n.batchesServed }()
	default:
		w.Header().Set("Retry-After", "1")
		refuse(http.StatusServiceUnavailable, fmt.Sprintf("%d batches of forwarded writes are being applied already", cap(h.n.batchesServed)))
		return
	}
	if r.ContentLength > clusterapi.MaxBatchBytes {
		refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is %d bytes; a batch is at most %d", r.ContentLength, clusterapi.MaxBatchBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, clusterapi.MaxBatchBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("a batch is at most %d bytes", clusterapi.MaxBatchBytes))
			return
		}
		refuse(http.StatusBadRequest, err.Error())
		return
	}
	events, err := clusterapi.DecodeBatch(body)
	if err != nil {
		refuse(http.StatusBadRequest, "batch: "+err.Error())
		return
	}
	results := make([]clusterapi.ProposeResult, len(events))
	var wg sync.WaitGroup
	for i, cmd := range events {
		wg.Go(func() {
			err := h.n.ProposeLocal(r.Context(), cmd)
			status, unknown := proposeStatus(err)
			results[i] = clusterapi.ProposeResult{Status: status, Unknown: unknown}
			if err != nil {
				results[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, clusterapi.ProposeBatchResponse{Results: results})
}

// fail maps membership errors to statuses; a call that only the leader can
// serve is redirected there.
func (h *handler) recover(w http.ResponseWriter, r *http.Request) {
	var req clusterapi.RecoverRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.Token == "" {
		httpError(w, http.StatusBadRequest, `body must be {"token":"..."} with a token`)
		return
	}
	if err := h.n.RequestRecovery(req.Token); err != nil {
		if errors.Is(err, ErrHasLeader) || errors.Is(err, ErrCannotRecover) {
			httpError(w, http.StatusConflict, err.Error())
			return
		}
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, clusterapi.Result{Result: "restarting to recover alone", ID: h.n.cfg.NodeID})
}

// backup streams a backup of the leader's store (307 to the leader
// elsewhere), or with ?local=true of this node's own, which is how to save
// a survivor's data when no leader can be elected. The headers say what
// it holds; the checksum ends the body and is repeated as a trailer.
func (h *handler) backup(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Query().Get("local") {
	case "", "false":
		if err := h.n.leaderOnly(); err != nil {
			h.fail(w, r, err)
			return
		}
	case "true":
	default:
		httpError(w, http.StatusBadRequest, "local must be true or false")
		return
	}
	hdr, rc, err := h.n.OpenBackup(r.Context(), r.URL.Query().Get("local") != "true")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// A large store streams for longer than the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	defer func() { _ = rc.Close() }()
	w.Header().Set("Content-Type", backup.ContentType)
	w.Header().Set(backup.HeaderFormatVersion, strconv.Itoa(backup.FormatVersion))
	w.Header().Set(backup.HeaderClusterID, hdr.ClusterID)
	w.Header().Set(backup.HeaderIndex, strconv.FormatUint(hdr.Index, 10))
	w.Header().Set(backup.HeaderTerm, strconv.FormatUint(hdr.Term, 10))
	w.Header().Set(backup.HeaderKeys, strconv.FormatUint(hdr.Keys, 10))
	w.Header().Set("Trailer", backup.TrailerSHA256)
	w.WriteHeader(http.StatusOK)
	bw, err := backup.NewWriter(w, hdr)
	if err == nil {
		_, err = io.Copy(bw, rc)
	}
	if err == nil {
		err = bw.Close()
	}
	if err != nil {
		// The status is sent: a client sees a body without a valid
		// trailer (and no checksum trailer), which backup.Verify refuses.
		h.n.cfg.Logger.Warn("backup stream failed", "error", err)
		return
	}
	w.Header().Set(backup.TrailerSHA256, bw.Sum())
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, core.ErrNotLeader), errors.Is(err, raft.ErrNotLeader):
		if api := h.n.LeaderAPI(); api != "" {
			w.Header().Set("Location", api+r.URL.RequestURI())
			httpError(w, http.StatusTemporaryRedirect, "not the leader; the leader is at "+api)
			return
		}
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "no leader is known yet")
	case errors.Is(err, ErrNoSuchMember):
		httpError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNotCaughtUp), errors.Is(err, ErrAlreadyBootstrapped),
		errors.Is(err, ErrNoTransferTarget), errors.Is(err, ErrTargetNotVoter):
		httpError(w, http.StatusConflict, err.Error())
	case errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrIndeterminate),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrTransferOutcomeUnknown), errors.Is(err, ErrTransferRefused):
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, err.Error())
	default:
		httpError(w, http.StatusInternalServerError, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, strings.ReplaceAll(msg, "\n", " "))
}
