package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
)

// A volume's incarnation, and why a node on a new volume does not vote.
//
// Raft's safety rests on each voter remembering, across crashes, its log
// and the vote it cast in its current term. A pod whose volume is lost
// restarts under the same node ID with neither. Still a voter in the
// configuration, it would grant its vote to any candidate (an empty log is
// never more up to date than the candidate's), and it could vote twice in
// one term. Example: three voters, a write W committed on pods 0 and 1;
// pod 1 loses its volume and pod 0 dies; pod 2, which lacks W, is elected
// with pod 1's vote, and W is gone.
//
// So each volume gets an identity: a random incarnation ID written to
// <data-dir>/incarnation at the node's first start on it, before any Raft
// state. A node whose volume is new is admitted (may vote) from the start
// only when it bootstraps a new cluster, or when its volume already held
// Raft state from a version without incarnations. Any other node on a new
// volume is pending: it refuses every vote and pre-vote request, and it
// never asks for votes itself, so it can neither elect a candidate nor
// become leader, whatever configuration it believes in. Counting its
// acknowledgements of appended entries toward a commit stays safe (it
// answers only once they are on its disk), and so does counting its
// heartbeat replies toward a leader's confirmation: a node that grants no
// votes cannot be part of the quorum that elected some other leader.
//
// Admission is an entry in the log: metaAdmitKey(id) = incarnation. The
// leader writes it when it promotes a non-voter (Promote) and the member
// reports an incarnation that is not admitted; the operator first removes
// a voter that reports a pending incarnation and adds it again as a
// non-voter, so promotion is the one path back to a vote. Because the ID
// is random and new for every volume, no entry written for an earlier
// incarnation (replayed while the node catches up) can admit this one.
// When the node applies its admission entry, its log holds every entry
// committed before it, so it no longer lacks anything it once acknowledged.
//
// What it lost besides is its vote. It may have voted, before its volume
// went, in any term up to the one it is admitted in, so from then on it
// grants votes only in later terms (VoteAfterTerm). That assumes no term
// beyond the admission entry's was reached before the loss by a candidate
// it voted for; such a candidate would have needed the old incarnation's
// vote and never won the term it left behind, since the cluster committed
// the admission entry in a lower one.
type incarnation struct {
	ID string `json:"id"`
	// Admitted: the node may vote.
	Admitted bool `json:"admitted"`
	// VoteAfterTerm: votes for terms up to this one are refused.
	VoteAfterTerm uint64 `json:"voteAfterTerm"`
}

const incarnationFile = "incarnation"

// metaAdmitKey is the metadata key that admits an incarnation of id.
func metaAdmitKey(id string) string { return "admit/" + id }

// volume keeps the incarnation of a node's data directory.
type volume struct {
	path string

	mu  sync.Mutex
	inc incarnation
}

// openVolume reads the incarnation of dir, or creates one. hasState says
// whether the directory holds Raft state; bootstrap, whether the node
// starts a new cluster on it if not.
//
// A new volume is admitted when it bootstraps, or when it holds Raft state
// from before incarnations existed. An admitted incarnation on a volume
// without Raft state lost its log (files deleted by hand, or a bootstrap
// that crashed before it wrote anything): it gets a new, pending
// incarnation. Keeping the old one would let its own admission entry,
// replayed from the leader, admit it again with a log that stops there.
func openVolume(dir string, hasState, bootstrap bool) (*volume, error) {
	v := &volume{path: filepath.Join(dir, incarnationFile)}
	b, err := os.ReadFile(v.path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &v.inc); err != nil || v.inc.ID == "" {
			return nil, fmt.Errorf("cluster: %s is damaged (%v); it names this volume's identity, and a node must not vote without it: restore it or replace the volume", v.path, err)
		}
		if hasState || !v.inc.Admitted || bootstrap {
			return v, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	v.inc = incarnation{ID: hex.EncodeToString(id), Admitted: hasState || bootstrap}
	if err := v.save(v.inc); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *volume) get() incarnation {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.inc
}

// admit records that this incarnation may vote in terms after term. It
// is on disk before the node acts on it.
func (v *volume) admit(term uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inc.Admitted {
		return nil
	}
	next := v.inc
	next.Admitted, next.VoteAfterTerm = true, term
	if err := v.save(next); err != nil {
		return err
	}
	v.inc = next
	return nil
}

// unadmit undoes an admission that nothing acted on (a bootstrap that
// failed): the incarnation is pending again.
func (v *volume) unadmit() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	next := v.inc
	next.Admitted, next.VoteAfterTerm = false, 0
	if err := v.save(next); err != nil {
		return err
	}
	v.inc = next
	return nil
}

// save writes inc durably (writeFileSync), so a crash leaves the old or
// the new.
func (v *volume) save(inc incarnation) error {
	b, err := json.Marshal(inc)
	if err != nil {
		return err
	}
	if err := writeFileSync(v.path, b); err != nil {
		return fmt.Errorf("cluster: write %s: %w", v.path, err)
	}
	return nil
}

// mayVote says why this node may not vote for a candidate in term, or nil.
func (v *volume) mayVote(term uint64) error {
	inc := v.get()
	switch {
	case !inc.Admitted:
		return fmt.Errorf("this node's volume (incarnation %s) is new and not admitted yet: it votes once the leader has promoted it", inc.ID)
	case term <= inc.VoteAfterTerm:
		return fmt.Errorf("this node may have voted in term %d before its volume was replaced", term)
	}
	return nil
}

// voteGuard refuses vote and pre-vote requests this node may not grant.
// The refusal carries the candidate's own term, so that it neither raises
// nor lowers anyone's.
func (n *Node) voteGuard(rpc raft.RPC) (any, error, bool) {
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		if err := n.vol.mayVote(req.Term); err != nil {
			n.refusedVote(string(req.ID), req.Term, err)
			return &raft.RequestVoteResponse{RPCHeader: n.rpcHeader(), Term: req.Term}, nil, true
		}
	case *raft.RequestPreVoteRequest:
		if err := n.vol.mayVote(req.Term); err != nil {
			n.refusedVote(string(req.ID), req.Term, err)
			return &raft.RequestPreVoteResponse{RPCHeader: n.rpcHeader(), Term: req.Term}, nil, true
		}
	case *raft.TimeoutNowRequest:
		// A leadership transfer to a node that cannot be elected would only
		// disrupt the cluster: its higher term deposes the leader, and then
		// it cannot ask for votes. The transfer fails instead.
		if err := n.mayCampaign(); err != nil {
			return nil, fmt.Errorf("cluster: %s: %v", timeoutNowRefused, err), true
		}
	}
	return nil, nil, false
}

func (n *Node) refusedVote(candidate string, term uint64, why error) {
	n.cfg.Logger.Warn("refusing vote", "candidate", candidate, "term", term, "reason", why)
}

func (n *Node) rpcHeader() raft.RPCHeader {
	return raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax,
		ID:              []byte(n.cfg.NodeID),
		Addr:            []byte(n.trans.LocalAddr()),
	}
}

// mayCampaign stops a node that may not vote from asking for votes: a
// pending node must not become leader with a log that may lack committed
// entries.
func (n *Node) mayCampaign() error {
	inc := n.vol.get()
	if !inc.Admitted {
		return fmt.Errorf("cluster: not admitted (incarnation %s): this node does not stand for election", inc.ID)
	}
	return nil
}

// restoredAdmission admits this node when a snapshot it installed
// already holds its admission (the leader compacted the entry away before
// this node received it). The snapshot carries no term, so the node's own
// current term, which is at least the term of the leader that sent it and
// so at least the entry's, bounds the terms it refuses to vote in.
func (n *Node) restoredAdmission() {
	inc := n.vol.get()
	if inc.Admitted || n.store.Meta(metaAdmitKey(n.cfg.NodeID)) != inc.ID {
		return
	}
	term, err := n.log.GetUint64([]byte(keyCurrentTerm))
	if err == nil {
		err = n.vol.admit(term)
	}
	if err != nil {
		n.cfg.Logger.Error("recording admission failed", "error", err)
		return
	}
	n.cfg.Logger.Info("admitted by a snapshot: this node votes again", "incarnation", inc.ID, "after-term", term)
}

// keyCurrentTerm is where hashicorp/raft keeps its current term in the
// stable store (raft.go, keyCurrentTerm; not exported).
const keyCurrentTerm = "CurrentTerm"

// applyAdmission admits this node when an entry admits its incarnation.
// It runs on raft's FSM goroutine as the entry is applied; term is the
// entry's.
func (n *Node) applyAdmission(key, value string, term uint64) {
	if key != metaAdmitKey(n.cfg.NodeID) || value != n.vol.get().ID {
		return
	}
	t := term
	if err := n.vol.admit(t); err != nil {
		// Not admitted: the node keeps refusing votes, which is safe; the
		// operator sees a voter that reports itself pending, removes it and
		// adds it again, and the next promotion admits it.
		n.cfg.Logger.Error("recording admission failed", "error", err)
		return
	}
	n.cfg.Logger.Info("admitted: this node votes again", "incarnation", value, "after-term", t)
}
