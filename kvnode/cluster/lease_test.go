package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// fakeClock is a monotonic clock the test moves.
type fakeClock struct{ now time.Duration }

func (c *fakeClock) read() time.Duration { return c.now }

func TestLeaseRules(t *testing.T) {
	clock := &fakeClock{now: time.Hour}
	l := newReadLease(100*time.Millisecond, clock.read)

	// Measured from the start of the round, on the monotonic clock.
	tk := l.begin()
	clock.now += 90 * time.Millisecond
	if !l.renew(tk, 5) || !l.holds(5) {
		t.Fatal("a round's renewal does not hold")
	}
	if l.holds(6) || l.holds(4) {
		t.Fatal("the lease holds in another term than its round's")
	}
	clock.now += 10 * time.Millisecond
	if l.holds(5) {
		t.Fatal("the lease holds 100ms after its round started: it was measured from the round's end")
	}

	// A revocation is not undone by a round that started before it.
	tk = l.begin()
	l.revoke()
	if l.renew(tk, 5) || l.holds(5) {
		t.Fatal("a round that started before a revocation renewed the lease")
	}
	if tk = l.begin(); !l.renew(tk, 5) || !l.holds(5) {
		t.Fatal("a round after the revocation does not renew the lease")
	}

	// A transfer ends the lease and fences its term for good.
	early := l.begin()
	l.transferStarted(5)
	if l.holds(5) || l.transferTerm() != 5 {
		t.Fatal("the lease holds while a transfer runs")
	}
	if tk = l.begin(); l.renew(tk, 6) {
		t.Fatal("a round renewed the lease while a transfer runs")
	}
	l.transferEnded(5)
	if l.renew(early, 5) {
		t.Fatal("a round from before the transfer renewed the lease")
	}
	if tk = l.begin(); l.renew(tk, 5) || l.holds(5) {
		t.Fatal("the lease holds again in the term of a transfer")
	}
	if tk = l.begin(); !l.renew(tk, 6) || !l.holds(6) {
		t.Fatal("no lease in a later term")
	}
	// A transfer that ran while the node moved on fences every term it saw.
	l.transferStarted(6)
	l.transferEnded(8)
	if tk = l.begin(); l.renew(tk, 7) || l.renew(tk, 8) {
		t.Fatal("the lease holds in a term reached during the transfer")
	}

	off := newReadLease(0, clock.read)
	if tk = off.begin(); off.renew(tk, 1) || off.holds(1) {
		t.Fatal("a lease with --read-lease=false")
	}
}

// openCluster starts voters in-process voters and nonVoters non-voters
// on loopback; node 0 leads.
func openCluster(t *testing.T, voters, nonVoters int, lease bool) []*Node {
	t.Helper()
	dir := t.TempDir()
	var nodes []*Node
	for i := 0; i < voters+nonVoters; i++ {
		n, err := Open(Config{NodeID: fmt.Sprintf("node-%d", i), DataDir: filepath.Join(dir, fmt.Sprint(i)), PeerBind: "127.0.0.1:0", Bootstrap: i == 0, Fast: true, ReadLease: lease}, core.NewStore())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Shutdown() })
		nodes = append(nodes, n)
	}
	l := nodes[0]
	waitLeader(t, core.NewService(l.store, l, core.DefaultLimits))
	for i, n := range nodes[1:] {
		add := l.raft.AddVoter
		if i+1 >= voters {
			add = l.raft.AddNonvoter
		}
		if err := add(raft.ServerID(n.cfg.NodeID), n.trans.LocalAddr(), 0, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		// Admit its volume, as Promote does, so that it votes.
		cmd, _ := core.Event{Type: core.EventMeta, Key: metaAdmitKey(n.cfg.NodeID), Value: []byte(n.vol.get().ID)}.MarshalBinary()
		if err := l.apply(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "every member caught up", func() error {
		for _, n := range nodes {
			if n.raft.LastIndex() != l.raft.LastIndex() || !n.vol.get().Admitted {
				return fmt.Errorf("%s has %d entries, the leader %d; admitted: %v", n.cfg.NodeID, n.raft.LastIndex(), l.raft.LastIndex(), n.vol.get().Admitted)
			}
		}
		return nil
	})
	return nodes
}

// sendTimeoutNow sends a TimeoutNow to n as a leader that started a
// transfer in term would (labeled: true), or as a kvnode that does not
// label them.
func sendTimeoutNow(t *testing.T, n *Node, term uint64, labeled bool) error {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	h := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("old-leader"), Addr: []byte(tr.LocalAddr())}
	if labeled {
		h = labelTerm(h, term)
	}
	return tr.TimeoutNow(raft.ServerID(n.cfg.NodeID), n.trans.LocalAddr(), &raft.TimeoutNowRequest{RPCHeader: h}, &raft.TimeoutNowResponse{})
}

// hashicorp/raft acts on a TimeoutNow whenever it arrives. One that was
// delayed (its target paused, the message in a socket buffer) would make
// the target stand for election, with the flag that makes voters ignore
// their leader, in a term whose leader may hold a read lease. Before the
// fix a TimeoutNow from an earlier term moved a node on to a new term.
func TestTimeoutNowOnlyInTheTermItWasSentIn(t *testing.T) {
	nodes := openCluster(t, 3, 0, true)
	l, f := nodes[0], nodes[1]
	term := l.raft.CurrentTerm()
	for _, c := range []struct {
		name    string
		term    uint64
		labeled bool
	}{
		{"from an earlier term", term - 1, true},
		{"from a later term", term + 1, true},
		{"without a term", 0, false},
	} {
		err := sendTimeoutNow(t, f, c.term, c.labeled)
		time.Sleep(500 * time.Millisecond) // more than an election
		if err == nil || f.raft.CurrentTerm() != term || l.raft.State() != raft.Leader {
			t.Fatalf("a TimeoutNow %s reached a follower in term %d: answer %v; its term now %d, the leader's state %s",
				c.name, term, err, f.raft.CurrentTerm(), l.raft.State())
		}
	}
	// The leader itself refuses one of its own term (it is not a follower).
	if err := sendTimeoutNow(t, l, term, true); err == nil {
		t.Fatal("the leader acted on a TimeoutNow")
	}
	// One of the current term is a transfer: the follower leads.
	if err := sendTimeoutNow(t, f, term, true); err != nil {
		t.Fatalf("a TimeoutNow of the current term: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the follower leads", func() error {
		if f.raft.State() != raft.Leader || f.raft.CurrentTerm() != term+1 {
			return fmt.Errorf("%s in term %d", f.raft.State(), f.raft.CurrentTerm())
		}
		return nil
	})
}

// A non-voter's acknowledgement must not confirm leadership: a leader
// cut off from the voters but not from a read replica would otherwise
// serve stale reads, and renew its lease. Before the fix raft's
// VerifyLeader counted it.
func TestQuorumRoundCountsOnlyVoters(t *testing.T) {
	nodes := openCluster(t, 2, 1, true)
	l, v := nodes[0], nodes[1]
	if _, err := l.ReadIndex(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if !l.lease.holds(l.raft.CurrentTerm()) {
		t.Fatal("no lease after a round")
	}
	v.Shutdown()
	// Faster than raft's own check steps the leader down.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if index, err := l.ReadIndex(ctx, true); err == nil {
		t.Fatalf("the leader confirmed read index %d with one of two voters and a non-voter", index)
	}
	if l.lease.holds(l.raft.CurrentTerm()) {
		t.Fatal("the leader renewed its lease with one of two voters and a non-voter")
	}
}

// GET /v1/cluster says leaderVerified only on the word of a voter quorum:
// a leader that one of two voters and a non-voter still answer has no
// majority, and the operator must not act on its configuration.
func TestLeaderVerifiedCountsOnlyVoters(t *testing.T) {
	nodes := openCluster(t, 2, 1, true)
	l, v := nodes[0], nodes[1]
	info, err := l.Info(context.Background())
	if err != nil || !info.LeaderVerified {
		t.Fatalf("a leader with both voters: verified %v, %v", info.LeaderVerified, err)
	}
	v.Shutdown()
	info, err = l.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.LeaderVerified {
		t.Fatal("leaderVerified with one of two voters and a non-voter")
	}
}

// A strict read makes a confirmation round (and no log entry) even while
// the lease holds; a linearizable one makes none, unless the lease is off.
func TestStrictReadsAlwaysMakeARound(t *testing.T) {
	for _, lease := range []bool{true, false} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			st := core.NewStore()
			n, err := Open(Config{NodeID: "node-0", DataDir: t.TempDir(), PeerBind: "127.0.0.1:0", Bootstrap: true, Fast: true, ReadLease: lease}, st)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Shutdown() })
			svc := core.NewService(st, n, core.DefaultLimits)
			waitLeader(t, svc)
			ctx := context.Background()
			rounds := func(c core.Consistency) (confirmations, entries uint64) {
				t.Helper()
				// Reads within the lease: 20 reads take far less than 100ms.
				if _, err := svc.Get(ctx, "k", core.Strict); !errors.Is(err, core.ErrNoSuchKey) {
					t.Fatal(err)
				}
				before, confirmed := n.raft.LastIndex(), n.confirmed.Load()
				for i := 0; i < 20; i++ {
					if _, err := svc.Get(ctx, "k", c); !errors.Is(err, core.ErrNoSuchKey) {
						t.Fatal(err)
					}
				}
				return n.confirmed.Load() - confirmed, n.raft.LastIndex() - before
			}
			if c, e := rounds(core.Strict); c != 20 || e != 0 {
				t.Fatalf("20 strict reads made %d confirmation rounds and %d log entries", c, e)
			}
			c, e := rounds(core.Linearizable)
			if lease && c+e != 0 {
				t.Fatalf("20 linearizable reads within the lease made %d confirmation rounds and %d log entries", c, e)
			}
			if !lease && (c != 20 || e != 0) {
				t.Fatalf("20 linearizable reads without the lease made %d confirmation rounds and %d log entries", c, e)
			}
		})
	}
}

type futureOf struct{ err error }

func (f futureOf) Error() error { return f.err }

// A transfer whose outcome is unknown leaves no lease in its term, ever;
// before the fix the lease came back half a second after the call
// returned, while the target could still act on the transfer.
func TestTransferFencesTheLeaseForItsTerm(t *testing.T) {
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: t.TempDir(), PeerBind: "127.0.0.1:0", Bootstrap: true, Fast: true, ReadLease: true}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	waitLeader(t, core.NewService(st, n, core.DefaultLimits))
	ctx := context.Background()
	if _, err := n.ReadIndex(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.leaseIndex(); !ok {
		t.Fatal("no lease after a round")
	}
	err = n.transfer(func() raft.Future { return futureOf{errors.New("leadership transfer timeout")} })
	if !errors.Is(err, ErrTransferOutcomeUnknown) {
		t.Fatalf("a timed-out transfer answers %v", err)
	}
	for i := 0; i < 5; i++ {
		time.Sleep(100 * time.Millisecond) // past the old code's block of twice the lease
		if _, err := n.ReadIndex(ctx, false); err != nil {
			t.Fatal(err)
		}
		if _, ok := n.leaseIndex(); ok {
			t.Fatal("the lease holds again in the term of a transfer whose outcome is unknown")
		}
	}
	refused := fmt.Errorf("failed to make TimeoutNow RPC to x: cluster: %s: sent in term 3, this node is in term 4", timeoutNowRefused)
	if err := n.transfer(func() raft.Future { return futureOf{refused} }); !errors.Is(err, ErrTransferRefused) {
		t.Fatalf("a transfer the target refused answers %v", err)
	}
}

// A restarted node has forgotten that it heard from a leader: for a
// heartbeat timeout it grants no vote or pre-vote but a transfer's.
func TestRestartedNodeHoldsItsVotes(t *testing.T) {
	n, _ := openNode(t, t.TempDir(), false)
	vote := raft.RPC{Command: &raft.RequestVoteRequest{Term: 9}}
	preVote := raft.RPC{Command: &raft.RequestPreVoteRequest{Term: 9}}
	transfer := raft.RPC{Command: &raft.RequestVoteRequest{Term: 9, LeadershipTransfer: true}}
	appendEntries := raft.RPC{Command: &raft.AppendEntriesRequest{Term: 9}}
	if n.clock() >= n.voteHold {
		t.Skip("the node took longer than a heartbeat timeout to open")
	}
	for _, c := range []struct {
		name string
		rpc  raft.RPC
		held bool
	}{{"vote", vote, true}, {"pre-vote", preVote, true}, {"transfer's vote", transfer, false}, {"AppendEntries", appendEntries, false}} {
		resp, err, handled := n.restartVoteGuard(c.rpc)
		granted := true
		switch r := resp.(type) {
		case *raft.RequestVoteResponse:
			granted = r.Granted
		case *raft.RequestPreVoteResponse:
			granted = r.Granted
		}
		if handled != c.held || err != nil || (handled && granted) {
			t.Errorf("%s right after the start: handled %v, answer %+v, %v", c.name, handled, resp, err)
		}
	}
	time.Sleep(n.voteHold)
	if _, _, handled := n.restartVoteGuard(vote); handled {
		t.Error("a vote is still held a heartbeat timeout after the start")
	}
}

// Readiness follows a node that applies what commits a moment later (a
// write under load, sampled between commit and apply) and fails for one
// that stays behind: an index committed more than applyGrace ago and not
// applied yet.
func TestReadyToleratesTheApplyOfTheMoment(t *testing.T) {
	var w lagWatch
	t0 := time.Now()
	for i, c := range []struct {
		applied, commit uint64
		at              time.Duration
		ready           bool
	}{
		{10, 11, 0, true},                        // committed, about to apply
		{11, 12, 10 * time.Millisecond, true},    // applied it; the next one commits
		{12, 14, 20 * time.Millisecond, true},    // and so on, under load
		{13, 20, 500 * time.Millisecond, true},   // behind 14, for less than the grace
		{13, 20, 1100 * time.Millisecond, false}, // 14 committed 1.08s ago, not applied
		{14, 25, 1200 * time.Millisecond, true},  // caught up with 14: a new target
		{14, 25, 2300 * time.Millisecond, false}, // stuck: 25 is not applied for 1.1s
		{25, 30, 2400 * time.Millisecond, true},  // moving again
	} {
		err := w.check(c.applied, c.commit, t0.Add(c.at))
		if (err == nil) != c.ready {
			t.Errorf("step %d (applied %d, commit %d at %v): %v, want ready %v", i, c.applied, c.commit, c.at, err, c.ready)
		}
	}
}
