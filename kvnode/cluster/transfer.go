package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// Errors of a leadership transfer.
var (
	// ErrTransferOutcomeUnknown: the transfer did not complete within
	// raft's wait, but its TimeoutNow may have reached the target, which
	// may act on it later (it may be paused, or the message delayed).
	ErrTransferOutcomeUnknown = errors.New("leadership transfer not completed in time; it may still take effect")
	// ErrTransferRefused: the target refused the transfer's TimeoutNow
	// (it is in another term now); nothing changed.
	ErrTransferRefused = errors.New("the target refused the leadership transfer")
	// ErrNoTransferTarget: there is no voter to hand leadership to.
	ErrNoTransferTarget = errors.New("no other voter to hand leadership to")
	// ErrTargetNotVoter: only a voter can lead.
	ErrTargetNotVoter = errors.New("the member is not a voter; only a voter can lead")
)

// transfer hands leadership over. The read lease ends before the transfer
// starts and never holds again in the term it starts in (nor in any term
// this node reaches before the call returns): the target may act on the
// TimeoutNow at any later time, and voters grant a transfer's vote even
// while they have a leader. The TimeoutNow is labeled with the term the
// transfer started in (guardedTransport.TimeoutNow), so that the target
// acts on it only in that term.
//
// It returns nil when this node no longer leads, ErrTransferOutcomeUnknown
// when that is not known, and other errors when nothing was done.
func (n *Node) transfer(f func() raft.Future) error {
	n.lease.transferStarted(n.raft.CurrentTerm())
	err := f().Error()
	n.lease.transferEnded(n.raft.CurrentTerm())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return core.ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return err
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", core.ErrUnavailable, err)
	case strings.Contains(err.Error(), timeoutNowRefused):
		// The target's own answer: it will not act on this TimeoutNow.
		return fmt.Errorf("%w: %v", ErrTransferRefused, err)
	}
	// A timeout, or a TimeoutNow whose answer was lost: the message may
	// be in the target's buffers.
	return fmt.Errorf("%w: %v", ErrTransferOutcomeUnknown, err)
}

// hashicorp/raft's TimeoutNow carries no term, so a delayed one makes its
// target a candidate in whatever term it has reached, with the flag that
// makes voters ignore their leader. This node's transport labels each
// TimeoutNow it sends with the term in which the transfer started, after
// the sender's ID in the header (which raft does not read for this
// message), and timeoutNowGuard refuses any whose label is not the
// receiver's current term.
const termLabel = "\x00term="

// timeoutNowRefused starts every refusal; the sender's transfer error
// carries it.
const timeoutNowRefused = "TimeoutNow refused"

func labelTerm(h raft.RPCHeader, term uint64) raft.RPCHeader {
	id := append(bytes.Clone(h.ID), termLabel...)
	h.ID = strconv.AppendUint(id, term, 10)
	return h
}

// splitTerm returns the header without its label, and the label.
func splitTerm(h raft.RPCHeader) (raft.RPCHeader, uint64, bool) {
	i := bytes.LastIndex(h.ID, []byte(termLabel))
	if i < 0 {
		return h, 0, false
	}
	term, err := strconv.ParseUint(string(h.ID[i+len(termLabel):]), 10, 64)
	if err != nil {
		return h, 0, false
	}
	h.ID = h.ID[:i]
	return h, term, true
}

// timeoutNowGuard lets a TimeoutNow through only to a follower in the
// term it was sent in. The transport hands one that passes to raft with
// the term held still until raft's election has moved past it
// (handOverTimeoutNow), so the election it starts is the one right after
// the sender's term, in which the sender holds no lease. A candidate
// refuses it: raft would keep the transfer's flag for a later round of its
// candidacy, in a term nobody checked. A TimeoutNow without a label (from
// a kvnode that does not label them) is refused: nothing bounds its delay.
func (n *Node) timeoutNowGuard(rpc raft.RPC) (any, error, bool) {
	req, ok := rpc.Command.(*raft.TimeoutNowRequest)
	if !ok {
		return nil, nil, false
	}
	header, sent, labeled := splitTerm(req.RPCHeader)
	r := n.running.Load()
	refuse := func(why string) (any, error, bool) {
		n.cfg.Logger.Warn("refusing a leadership transfer's TimeoutNow", "from", string(header.ID), "why", why)
		return nil, fmt.Errorf("cluster: %s: %s", timeoutNowRefused, why), true
	}
	switch {
	case !labeled:
		return refuse("it does not say the term it was sent in")
	case r == nil:
		return refuse("raft is not running yet")
	case sent != r.CurrentTerm():
		return refuse(fmt.Sprintf("sent in term %d, this node is in term %d", sent, r.CurrentTerm()))
	case r.State() != raft.Follower:
		return refuse("this node is a " + r.State().String())
	}
	return nil, nil, false
}

// restartVoteGuard refuses votes and pre-votes (but not a transfer's
// vote) for a heartbeat timeout after the node starts. A follower refuses
// them while it has heard from its leader within a heartbeat timeout,
// which the read lease relies on, but a restarted process has forgotten
// that it heard from one: without this guard a voter that acknowledged a
// lease's round and restarted at once could elect another leader while
// the lease holds.
func (n *Node) restartVoteGuard(rpc raft.RPC) (any, error, bool) {
	if n.clock() >= n.voteHold {
		return nil, nil, false
	}
	why := fmt.Errorf("no votes for %v after a start: a leader may have been heard from just before", n.voteHold)
	// Refused as voteGuard refuses: with the candidate's own term.
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		if req.LeadershipTransfer {
			return nil, nil, false
		}
		n.refusedVote(string(req.ID), req.Term, why)
		return &raft.RequestVoteResponse{RPCHeader: n.rpcHeader(), Term: req.Term}, nil, true
	case *raft.RequestPreVoteRequest:
		n.refusedVote(string(req.ID), req.Term, why)
		return &raft.RequestPreVoteResponse{RPCHeader: n.rpcHeader(), Term: req.Term}, nil, true
	}
	return nil, nil, false
}

// currentTerm is raft's current term, 0 before raft runs; the transport's
// goroutine may ask before Open has finished.
func (n *Node) currentTerm() uint64 {
	if r := n.running.Load(); r != nil {
		return r.CurrentTerm()
	}
	return 0
}

// transferTerm is the term the latest transfer started in, the label of
// the TimeoutNow messages this node sends.
func (n *Node) transferTerm() uint64 { return n.lease.transferTerm() }

// awaitLeader waits up to d for a leader to be known, and returns its ID.
func (n *Node) awaitLeader(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		if _, id := n.raft.LeaderWithID(); id != "" || time.Now().After(deadline) {
			return string(id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// transferToAny hands leadership to the voter best placed to win: one that
// is admitted (a member on a new volume refuses the TimeoutNow and cannot
// be elected) and ready, with the highest applied index. raft's own choice
// (the highest next index) knows nothing of admission. When no member's
// status says so, raft chooses.
func (n *Node) transferToAny(ctx context.Context) error {
	if s, ok := n.transferTarget(ctx); ok {
		return n.transfer(func() raft.Future { return n.raft.LeadershipTransferToServer(s.ID, s.Address) })
	}
	return n.transfer(n.raft.LeadershipTransfer)
}

func (n *Node) transferTarget(ctx context.Context) (raft.Server, bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return raft.Server{}, false
	}
	var voters []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.NodeID {
			voters = append(voters, s)
		}
	}
	statuses := make([]*clusterapi.NodeStatus, len(voters))
	var wg sync.WaitGroup
	for i, s := range voters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := n.memberStatus(ctx, string(s.ID), n.store.Meta(metaAPIKey(string(s.ID)))); err == nil {
				statuses[i] = &st
			}
		}()
	}
	wg.Wait()
	best := -1
	for i, st := range statuses {
		if st == nil || !st.Ready || (st.Incarnation != "" && !st.Admitted) {
			continue
		}
		if best < 0 || st.AppliedIndex > statuses[best].AppliedIndex {
			best = i
		}
	}
	if best < 0 {
		return raft.Server{}, false
	}
	return voters[best], true
}
