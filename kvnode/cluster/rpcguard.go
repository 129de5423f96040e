package cluster

import (
	"errors"
	"sync"
	"time"

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
	// terms, when set, labels the TimeoutNow messages this node sends and
	// lets a TimeoutNow that the guards pass reach raft while the term
	// cannot change (handOverTimeoutNow).
	terms termView
	// fastPath is held for reading by every heartbeat raft handles on the
	// transport's fast path, the one way raft's term changes outside its
	// main loop, and for writing while a TimeoutNow is handed over.
	fastPath sync.RWMutex

	closeOnce sync.Once
	done      chan struct{}
}

// termView is what the transport knows of its node's terms.
type termView interface {
	// currentTerm is raft's current term (0 before raft runs).
	currentTerm() uint64
	// transferTerm is the term in which the node's latest leadership
	// transfer started (0: none).
	transferTerm() uint64
}

func newGuardedTransport(t raft.Transport, campaign func() error, terms termView, guards ...guard) *guardedTransport {
	g := &guardedTransport{Transport: t, guards: guards, campaign: campaign, terms: terms, out: make(chan raft.RPC), done: make(chan struct{})}
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
			if _, ok := rpc.Command.(*raft.TimeoutNowRequest); ok && g.terms != nil {
				g.handOverTimeoutNow(rpc)
				continue
			}
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

// handOverTimeoutNow gives raft a TimeoutNow that the guards let
// through such that the term they checked is the term raft acts in: from
// the check until raft's election has moved the term past it, heartbeats
// on the fast path (the one way the term changes outside raft's main
// loop) wait, and raft is handed the message only while its main loop is
// idle waiting for RPCs, so that it acts on it at once. Otherwise a
// heartbeat of a newer leader could move the term on between the check and
// the election, which would then end that leader's read lease. If raft's
// main loop is not idle within a second, the message is refused.
func (g *guardedTransport) handOverTimeoutNow(rpc raft.RPC) {
	req := rpc.Command.(*raft.TimeoutNowRequest)
	deadline := time.Now().Add(time.Second)
	for {
		g.fastPath.Lock()
		if g.answer(rpc) {
			g.fastPath.Unlock()
			return
		}
		header, sent, _ := splitTerm(req.RPCHeader)
		inner := rpc
		inner.Command = &raft.TimeoutNowRequest{RPCHeader: header}
		reply := make(chan raft.RPCResponse, 1)
		inner.RespChan = reply
		select {
		case g.out <- inner:
			var res raft.RPCResponse
			select {
			case res = <-reply:
			case <-g.done:
				g.fastPath.Unlock()
				rpc.Respond(nil, errors.New("cluster: transport closed"))
				return
			}
			if res.Error == nil {
				// raft is a candidate; its election persists term sent+1.
				for hold := time.Now().Add(time.Second); g.terms.currentTerm() <= sent && time.Now().Before(hold); {
					time.Sleep(50 * time.Microsecond)
				}
			}
			g.fastPath.Unlock()
			rpc.Respond(res.Response, res.Error)
			return
		default:
		}
		g.fastPath.Unlock()
		if time.Now().After(deadline) {
			rpc.Respond(nil, errors.New("cluster: "+timeoutNowRefused+": raft was busy"))
			return
		}
		select {
		case <-time.After(time.Millisecond):
		case <-g.done:
			rpc.Respond(nil, errors.New("cluster: transport closed"))
			return
		}
	}
}

// SetHeartbeatHandler implements raft.Transport: raft's fast-path handler
// runs under fastPath.
func (g *guardedTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.Transport.SetHeartbeatHandler(nil)
		return
	}
	g.Transport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.fastPath.RLock()
		defer g.fastPath.RUnlock()
		cb(rpc)
	})
}

// TimeoutNow implements raft.Transport: the message is labeled with the
// term in which this node started the transfer that sends it.
func (g *guardedTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if g.terms != nil {
		args = &raft.TimeoutNowRequest{RPCHeader: labelTerm(args.RPCHeader, g.terms.transferTerm())}
	}
	return g.Transport.TimeoutNow(id, target, args, resp)
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
	return []guard{n.voteGuard, n.timeoutNowGuard, n.restartVoteGuard}
}
