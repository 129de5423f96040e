package cluster

import (
	"context"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaderHint keeps the leader's gRPC address, which a follower learns by
// asking the leader (its status names it), for LeaderHint.
type leaderHint struct {
	mu       sync.Mutex
	id, api  string // the leader it is of, and where its API is
	grpc     string
	asked    time.Time
	fetching bool
}

// hintRetry is how long a follower waits before it asks a leader again
// for its gRPC address, after a failure or an answer without one; and
// hintFor how long an address it learnt is named before it asks again (a
// leader that restarted may listen elsewhere).
const (
	hintRetry = 10 * time.Second
	hintFor   = time.Minute
)

// LeaderHint returns the addresses of the member that leads, as far as
// this node knows them: its API URL and its gRPC address (each "" when
// not known), for clients that send writes straight to the leader
// (keyapi.HeaderLeader). A follower learns the leader's gRPC address from
// the leader's status, asked in the background, and answers "" until
// then. Nothing depends on the hint being right: a write sent to a member
// that no longer leads is forwarded.
func (n *Node) LeaderHint() (api, grpcAddr string) {
	_, id := n.raft.LeaderWithID()
	switch id {
	case "":
		return "", ""
	case raft.ServerID(n.cfg.NodeID):
		// A standalone node listening on every interface advertises an
		// address nobody else can dial: no hint then (hintSelf).
		if !n.hintSelf {
			return "", ""
		}
		return n.cfg.APIAdvertise, n.cfg.GRPCAdvertise
	}
	api = n.store.Meta(metaAPIKey(string(id)))
	if api == "" {
		return "", ""
	}
	h := &n.hint
	h.mu.Lock()
	defer h.mu.Unlock()
	same := h.id == string(id) && h.api == api
	if same && h.grpc != "" && time.Since(h.asked) < hintFor {
		return api, h.grpc
	}
	if !h.fetching && (!same || time.Since(h.asked) > hintRetry) {
		if !same {
			h.grpc = ""
		}
		h.id, h.api, h.asked, h.fetching = string(id), api, time.Now(), true
		go func() {
			st, err := n.memberStatus(context.Background(), string(id), api)
			h.mu.Lock()
			defer h.mu.Unlock()
			h.fetching = false
			if h.id == string(id) && h.api == api {
				h.grpc = ""
				if err == nil && st.ID == string(id) {
					h.grpc = st.GRPC
				}
			}
		}()
	}
	if same {
		// The address learnt last, while it is asked again.
		return api, h.grpc
	}
	return api, ""
}

// dialable reports whether the URL's host is one that others can dial (not
// 0.0.0.0 or ::).
func dialable(api string) bool {
	u, err := url.Parse(api)
	if err != nil || u.Hostname() == "" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip == nil || !ip.IsUnspecified()
}
