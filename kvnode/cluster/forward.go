package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// Followers reach the leader over its HTTP API (the same port as clients,
// the same server certificate; the follower presents its peer certificate,
// through Config.APIClient): POST clusterapi.PathPropose carries an encoded
// event, GET clusterapi.PathReadIndex returns a confirmed commit index. Header
// outcomeHeader tells a forwarding node whether a failed write may have
// been applied.
const (
	outcomeHeader = keyapi.HeaderOutcome
	forwardHeader = "X-Kv-Forwarded"
)

// metaAPIKey is the metadata key under which a member's API URL is kept.
func metaAPIKey(id string) string { return "api/" + id }

// metaClusterID is the metadata key of the cluster's identity.
const metaClusterID = "cluster-id"

// leaderAPI returns the leader's API URL, or an error that says the write
// was certainly not applied.
func (n *Node) leaderAPI() (string, raft.ServerID, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return "", "", fmt.Errorf("%w: no leader is known", core.ErrUnavailable)
	}
	if id == raft.ServerID(n.cfg.NodeID) {
		return "", id, nil
	}
	api := n.store.Meta(metaAPIKey(string(id)))
	if api == "" {
		return "", id, fmt.Errorf("%w: the API address of leader %s is not known yet", core.ErrUnavailable, id)
	}
	return api, id, nil
}

// retryable reports whether err certainly left the write unapplied, so
// that trying again (once a leader is known) cannot apply it twice.
func retryable(err error) bool {
	return errors.Is(err, core.ErrUnavailable) || errors.Is(err, core.ErrNotLeader)
}

// untilLeader runs try until it succeeds, fails for good, or ctx ends.
// During an election try fails with a retryable error and is called again.
func untilLeader[T any](ctx context.Context, n *Node, try func() (T, error)) (T, error) {
	backoff := 5 * time.Millisecond
	for {
		v, err := try()
		if err == nil || !retryable(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%w (waited until the request's deadline)", err)
		case <-n.closed:
			return v, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (n *Node) forwardPropose(ctx context.Context, api string, cmd []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+clusterapi.PathPropose, bytes.NewReader(cmd))
	if err != nil {
		return err
	}
	req.Header.Set(forwardHeader, n.cfg.NodeID)
	resp, err := n.client.Do(req)
	if err != nil {
		if isDialError(err) {
			return fmt.Errorf("%w: leader unreachable: %v", core.ErrUnavailable, err)
		}
		return fmt.Errorf("%w: forwarding to the leader: %v", core.ErrIndeterminate, err)
	}
	defer resp.Body.Close()
	defer drainBody(resp.Body)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return forwardedError(resp.StatusCode, resp.Header.Get(outcomeHeader) == keyapi.OutcomeUnknown, strings.TrimSpace(string(body)))
}

// forwardedError is what the leader's answer to a forwarded event means
// for the client: nil when it was applied (204); an error that says
// whether it may have been applied (unknown) and, if not, why.
func forwardedError(status int, unknown bool, msg string) error {
	if status == http.StatusNoContent {
		return nil
	}
	if unknown {
		return fmt.Errorf("%w: leader: %s", core.ErrIndeterminate, msg)
	}
	switch status {
	case http.StatusServiceUnavailable:
		return fmt.Errorf("%w: leader: %s", core.ErrUnavailable, msg)
	// The leader's limits refused the event (they differ from this node's
	// while a change of limits rolls out): the client gets the API's answer.
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: leader: %s", core.ErrValueTooLarge, msg)
	case http.StatusRequestURITooLong:
		return fmt.Errorf("%w: leader: %s", core.ErrKeyTooLarge, msg)
	// The leader's volume is full: not applied, and not worth retrying
	// at once.
	case http.StatusInsufficientStorage:
		return fmt.Errorf("%w: leader: %s", core.ErrNoSpace, msg)
	}
	return fmt.Errorf("leader answered %d: %s", status, msg)
}

func (n *Node) forwardReadIndex(ctx context.Context, api string, strict bool) (uint64, error) {
	u := api + clusterapi.PathReadIndex
	if strict {
		u += "?" + clusterapi.QueryStrict + "=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(forwardHeader, n.cfg.NodeID)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: leader unreachable: %v", core.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	defer drainBody(resp.Body)
	var out clusterapi.ReadIndexResponse
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("%w: leader: %s", core.ErrUnavailable, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("%w: leader: %v", core.ErrUnavailable, err)
	}
	if strict && !out.Strict {
		return 0, fmt.Errorf("%w: the leader does not make quorum rounds on request (an older kvnode)", core.ErrUnavailable)
	}
	return out.Index, nil
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// drainBody reads what is left of a response's body (a few bytes after a
// JSON value, say), before it is closed: a body closed before its end
// takes its connection with it, and the next call to that member dials
// again (with TLS, a handshake).
func drainBody(body io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
}
