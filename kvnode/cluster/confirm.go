package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// confirmRound is the leader's read index for strict reads (Raft thesis
// §6.4, as etcd's ReadIndex), without a log entry and so without an fsync
// on any member: it takes the commit index, then asks every other voter
// of its configuration for its current term (clusterapi.PathTerm), and
// answers the index once a majority of the voters, itself included, has
// answered a term no higher than its own.
//
// Why that is safe. Say the round starts at S, after this leader has
// committed an entry of its term (awaitReady), so the index covers every
// write acknowledged before S by it or by any earlier leader. A write
// acknowledged before S that the index misses would need a leader of a
// later term elected before S. Its election took the votes of a majority
// of the voters, and a member raises its term before it votes, and never
// lowers it. Our majority and that one share a voter (single-server
// membership changes keep any two majorities of consecutive
// configurations overlapping), which answered, after S (every request
// of the round is sent after S, so no answer predates it), a term no
// higher than ours: it had not voted in a later term, so that leader did
// not exist before S. Nothing here rests on clocks, timeouts or on which
// answers raft has in flight: a paused leader that resumes finds the
// voters at a higher term and fails the round.
//
// What it assumes: members answer PathTerm with the highest of raft's
// current term (persisted before a vote is granted) and the term of their
// last vote, so that a heartbeat racing a vote cannot show a lower term
// (votedTerm); an answer counts only from the voter asked (its ID and
// cluster ID, whatever address the metadata holds), never twice, never
// the leader's own; a member on a new volume, which may have voted on the
// one it lost, does not answer. It does not renew the read lease: a member's answer
// says nothing of when it will next vote, which the lease relies on.
//
// A round that cannot gather a majority (a voter unreachable, a member
// from before PathTerm) falls back to quorumRound, which commits an entry;
// one that sees a higher term fails: this node no longer leads.
//
// Tests: TestLinearizableUnderFaults (strict reads among its operations,
// with paused leaders and partitions), TestStrictReadsMakeRounds.
func (n *Node) confirmRound(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, core.ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	if err := n.awaitReady(ctx, term); err != nil {
		return 0, err
	}
	index := n.raft.CommitIndex()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return n.quorumRound(ctx)
	}
	var others []raft.ServerID
	self := false
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			self = true
		} else {
			others = append(others, s.ID)
		}
	}
	if !self {
		return n.quorumRound(ctx) // a leader on its way out of the configuration
	}
	need := voters/2 + 1 - 1 // itself counts
	type answer struct {
		term uint64
		err  error
	}
	cluster := n.clusterID()
	answers := make(chan answer, len(others))
	// The requests outlive the round, until its deadline: cutting the
	// ones still on their way once a majority has answered closed their
	// connections, and the next round dialled (with TLS, shook hands)
	// again: that was a tenth of the leader's CPU under strict reads.
	// Their answers go unread into the buffered channel.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	for _, id := range others {
		api := n.store.Meta(metaAPIKey(string(id)))
		go func() {
			if api == "" {
				answers <- answer{err: fmt.Errorf("the API address of %s is not known", id)}
				return
			}
			actx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
			defer cancel()
			r, err := n.askTerm(actx, api)
			switch {
			case err != nil:
			case r.ID != string(id) || r.ClusterID != cluster:
				err = fmt.Errorf("%s answered as %s of cluster %q", api, r.ID, r.ClusterID)
			}
			answers <- answer{r.Term, err}
		}()
	}
	confirmed, failed := 0, 0
	for confirmed < need {
		if failed > len(others)-need {
			return n.quorumRound(ctx) // too few answers: commit an entry instead
		}
		select {
		case a := <-answers:
			switch {
			case a.err != nil:
				failed++
			case a.term > term:
				return 0, fmt.Errorf("%w: a voter is at term %d, this leader at %d", core.ErrNotLeader, a.term, term)
			default:
				confirmed++
			}
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: confirming leadership: %v", core.ErrUnavailable, ctx.Err())
		}
	}
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return 0, core.ErrNotLeader
	}
	n.confirmed.Add(1)
	return index, nil
}

// askTerm asks the member at api for its term.
func (n *Node) askTerm(ctx context.Context, api string) (clusterapi.TermResponse, error) {
	var out clusterapi.TermResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+clusterapi.PathTerm, nil)
	if err != nil {
		return out, err
	}
	req.Header.Set(forwardHeader, n.cfg.NodeID)
	resp, err := n.client.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	defer drainBody(resp.Body)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return out, fmt.Errorf("term: %s", resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&out)
	return out, err
}

// votedTerm is the highest term this member has been in or voted in.
// raft's current term alone could show less: a heartbeat, handled off
// raft's main loop, may store the term it read before a vote in a later
// term was granted (hashicorp/raft reads and writes it without a lock
// between them).
func (n *Node) votedTerm() uint64 {
	t := n.raft.CurrentTerm()
	if v, err := n.log.GetUint64([]byte("LastVoteTerm")); err == nil && v > t {
		t = v
	}
	return t
}
