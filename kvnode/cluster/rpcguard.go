package cluster

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// A guard looks at an RPC before raft does. It returns handled=false to
// pass the RPC on, or answers it itself with resp or err. Guards enforce
// rules that hashicorp/raft does not know about (a node that lost its
// volume must not vote; a stale TimeoutNow must not start an election), and
// they run on the consumer side, so no remote peer can get around them.
type guard func(rpc raft.RPC) (resp any, err error, handled bool)

// guardedTransport is raft's transport with guards in front of its
// consumer. Heartbeats take the transport's fast path and are not seen:
// guards are for votes, pre-votes and TimeoutNow, which never take it.
type guardedTransport struct {
	raft.Transport
	guards []guard
	// campaign, when it fails, keeps this node's vote and pre-vote
	// requests from being sent.
	campaign func() error
	out      chan raft.RPC

	closeOnce sync.Once
	done      chan struct{}
}

func newGuardedTransport(t raft.Transport, campaign func() error, guards ...guard) *guardedTransport {
	g := &guardedTransport{Transport: t, guards: guards, campaign: campaign, out: make(chan raft.RPC), done: make(chan struct{})}
	go g.run()
	return g
}

func (g *guardedTransport) run() {
	in := g.Transport.Consumer()
	for {
		select {
		case <-g.done:
			return
		case rpc := <-in:
			if g.answer(rpc) {
				continue
			}
			select {
			case g.out <- rpc:
			case <-g.done:
				rpc.Respond(nil, errors.New("cluster: transport closed"))
				return
			}
		}
	}
}

func (g *guardedTransport) answer(rpc raft.RPC) bool {
	for _, check := range g.guards {
		if resp, err, handled := check(rpc); handled {
			rpc.Respond(resp, err)
			return true
		}
	}
	return false
}

// Consumer implements raft.Transport.
func (g *guardedTransport) Consumer() <-chan raft.RPC { return g.out }

// RequestVote implements raft.Transport.
func (g *guardedTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := g.campaign(); err != nil {
		return err
	}
	return g.Transport.RequestVote(id, target, args, resp)
}

// RequestPreVote implements raft.WithPreVote, which raft checks for with a
// type assertion: without it a wrapped transport would turn pre-vote off.
func (g *guardedTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := g.campaign(); err != nil {
		return err
	}
	pv, ok := g.Transport.(raft.WithPreVote)
	if !ok {
		return errors.New("cluster: the transport does not support pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// Close implements raft.WithClose.
func (g *guardedTransport) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.done)
		if c, ok := g.Transport.(raft.WithClose); ok {
			err = c.Close()
		}
	})
	return err
}

// guards lists the rules this node enforces on incoming RPCs, in order.
func (n *Node) guards() []guard {
	return []guard{n.voteGuard}
}
