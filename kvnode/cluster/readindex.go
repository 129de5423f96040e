package cluster

import (
	"context"
	"sync"

	"github.com/hashicorp/raft"
)

// readIndex batches leadership confirmations: every read that arrives
// while a confirmation is running joins the next one, so N concurrent
// linearizable reads cost one quorum round, not N.
type readIndex struct {
	raft *raft.Raft

	mu      sync.Mutex
	pending *readRound
	running bool
}

type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

func newReadIndex(r *raft.Raft) *readIndex { return &readIndex{raft: r} }

// confirm returns a commit index that is at least every index committed
// before the call, once a quorum has confirmed this node still leads.
func (ri *readIndex) confirm(ctx context.Context) (uint64, error) {
	ri.mu.Lock()
	if ri.pending == nil {
		ri.pending = &readRound{done: make(chan struct{})}
	}
	round := ri.pending
	if !ri.running {
		ri.running = true
		go ri.loop()
	}
	ri.mu.Unlock()
	select {
	case <-round.done:
		return round.index, round.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (ri *readIndex) loop() {
	for {
		ri.mu.Lock()
		round := ri.pending
		ri.pending = nil
		if round == nil {
			ri.running = false
			ri.mu.Unlock()
			return
		}
		ri.mu.Unlock()
		// The index is read after every member of the round has arrived and
		// before leadership is confirmed: the read-index rule.
		round.index = ri.raft.CommitIndex()
		round.err = ri.raft.VerifyLeader().Error()
		close(round.done)
	}
}
