package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

// A leadership transfer to a member that is paused (SIGSTOP) when it is
// asked: the transfer call times out, but the TimeoutNow message waits in
// the target's socket buffer, and the target acts on it when it resumes,
// cut off from the old leader, long after the call answered. Voters grant
// a vote flagged as a transfer even while they have a leader, so the
// target is elected at once and acknowledges writes. The old leader must
// not answer a linearizable read with a value older than such a write:
// once it had started the transfer, its read lease could no longer prove
// that no other member leads. Before the fix the old leader renewed its
// lease half a second after the transfer call returned and served stale
// reads from it.
//
// The fault is repeated for KV_LEASE_DURATION (60s; 20s with -short).
func TestDelayedTransferServesNoStaleRead(t *testing.T) {
	budget := 60 * time.Second
	if testing.Short() {
		budget = 20 * time.Second
	}
	if s := os.Getenv("KV_LEASE_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KV_LEASE_DURATION: %v", err)
		}
		budget = d
	}
	c := newCluster(t)
	ctx := ctxFor(t, budget+2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	var faults, acted, elected, staleFaults int
	answers := map[string]int{}
	deadline := time.Now().Add(budget)
	for i := 0; time.Now().Before(deadline); i++ {
		r := delayedTransfer(t, c, i)
		faults++
		answers[r.answer]++
		if r.acted {
			acted++
		}
		if r.elected {
			elected++
		}
		if len(r.stale) > 0 {
			staleFaults++
			t.Errorf("fault %d: the old leader %s answered %d linearizable reads that started after a write acknowledged through the new leader %s with the value before it, e.g. %s",
				i, r.oldLeader, len(r.stale), r.target, r.stale[0])
		}
	}
	t.Logf("%d faults: the target stood for election through the delayed TimeoutNow in %d and won in %d; stale reads in %d; transfer answers: %v", faults, acted, elected, staleFaults, answers)
	if acted == 0 {
		t.Fatal("the target never acted on the delayed TimeoutNow: the test shows nothing")
	}
}

type transferFault struct {
	oldLeader, target string
	answer            string // the transfer call's status and outcome
	acted             bool   // the target stood for election at once when it resumed
	elected           bool   // and won
	stale             []string
}

type readResult struct {
	start, end time.Time
	code       int
	body       string
}

func delayedTransfer(t *testing.T, c *harness.Cluster, i int) transferFault {
	t.Helper()
	for _, m := range c.Members() {
		m.Resume()
		m.Proxy().Heal()
	}
	leader := stableLeader(t, c)
	var target *harness.Member
	for j := 1; j < len(c.Members()); j++ {
		if m := c.Member((leader.Index + i + j) % len(c.Members())); m != leader {
			target = m
			break
		}
	}
	r := transferFault{oldLeader: leader.ID, target: target.ID}
	key := fmt.Sprintf("lease-%d", i)
	before, after := fmt.Sprintf("before-%d", i), fmt.Sprintf("after-%d", i)
	if err := harness.Retry(ctxFor(t, 20*time.Second), func() error {
		code, body, err := kv(c, leader, "PUT", key, before, "")
		if err == nil && code != 201 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("write through the leader %s: %v", leader.ID, err)
	}

	// The transfer sends its TimeoutNow only to a target that has every
	// entry of the leader's log.
	if err := harness.Retry(ctxFor(t, 10*time.Second), func() error {
		var l, f clusterapi.NodeStatus
		if err := getJSON(c, leader, clusterapi.PathStatus, &l); err != nil {
			return err
		}
		if err := getJSON(c, target, clusterapi.PathStatus, &f); err != nil {
			return err
		}
		if f.LastIndex < l.LastIndex {
			return fmt.Errorf("%s has %d entries, the leader %d", target.ID, f.LastIndex, l.LastIndex)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var before0 clusterapi.NodeStatus
	if err := getJSON(c, target, clusterapi.PathStatus, &before0); err != nil {
		t.Fatal(err)
	}
	target.Pause()
	code, body, err := c.Transfer(context.Background(), leader, target.ID)
	r.answer = fmt.Sprintf("%d %s", code, body)
	if err != nil {
		r.answer = err.Error()
	}
	// The old leader can no longer reach the target; the TimeoutNow it
	// sent waits in the target's buffers. Nor can the target reach the old
	// leader: its vote request would depose the old leader at once, so the
	// old leader learns of the new term only from the third member's
	// answers, a heartbeat later. (With the target's link to the old
	// leader left up, the old code served no stale read in 24 faults.)
	target.Proxy().Cut(leader.Index)
	leader.Proxy().Cut(target.Index)

	// Linearizable reads on the old leader keep its lease warm, if it
	// takes one, until after the target has taken over.
	stop := make(chan struct{})
	var mu sync.Mutex
	var reads []readResult
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				code, body, err := kv(c, leader, "GET", key, "", "")
				if err != nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				mu.Lock()
				reads = append(reads, readResult{start: start, end: time.Now(), code: code, body: body})
				mu.Unlock()
				if code != 200 {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	// Longer than the old code blocked the lease after a transfer call.
	time.Sleep(700 * time.Millisecond)
	target.Resume()

	// Write through the target as soon as it leads.
	var acked time.Time
	until := time.Now().Add(3 * time.Second)
	for time.Now().Before(until) && acked.IsZero() {
		var v clusterapi.NodeStatus
		err := getJSON(c, target, clusterapi.PathStatus, &v)
		// Without the TimeoutNow it would first have to time out and win
		// a pre-vote, which the third member, which hears from the old
		// leader, refuses.
		if err == nil && v.Term > before0.Term && time.Until(until) > 2*time.Second {
			r.acted = true
		}
		if err != nil || v.State != "Leader" {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		r.elected = true
		if code, _, err := kv(c, target, "PUT", key, after, ""); err == nil && code == 201 {
			acked = time.Now()
		}
	}
	if acked.IsZero() {
		return r
	}
	time.Sleep(400 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, rd := range reads {
		if rd.start.After(acked) && rd.code == 200 && rd.body == before {
			r.stale = append(r.stale, fmt.Sprintf("GET %s = %q, started %v after the write of %q was acknowledged", key, rd.body, rd.start.Sub(acked).Round(time.Millisecond), after))
		}
	}
	return r
}

// stableLeader waits until a member leads and answers a write.
func stableLeader(t *testing.T, c *harness.Cluster) *harness.Member {
	t.Helper()
	var leader *harness.Member
	err := harness.Retry(ctxFor(t, 30*time.Second), func() error {
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		for _, m := range c.Members() {
			if m.ID == info.Leader {
				if code, body, err := kv(c, m, "PUT", "lease-probe", "x", ""); err != nil || code != 201 {
					return fmt.Errorf("probe write on %s: %d %s %v", m.ID, code, body, err)
				}
				leader = m
				return nil
			}
		}
		return fmt.Errorf("no leader in %+v", info)
	})
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// getJSON reads a member's internal API with the peer certificate.
func getJSON(c *harness.Cluster, m *harness.Member, path string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.API+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Peer.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return jsonDecode(resp, out)
}

// POST /v1/cluster/leader says what happened: done, naming the new
// leader, or an unknown outcome when the target may still act on the
// transfer later. Before, a transfer to a paused target answered 500
// "leadership transfer timeout", and took effect when the target resumed.
func TestTransferAnswerSaysWhatHappened(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	leader := stableLeader(t, c)
	others := func(not *harness.Member) []*harness.Member {
		var o []*harness.Member
		for _, m := range c.Members() {
			if m != not {
				o = append(o, m)
			}
		}
		return o
	}
	target := others(leader)[0]
	code, body, err := c.Transfer(ctx, leader, target.ID)
	var res clusterapi.TransferResult
	if err != nil || code != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil ||
		res.Outcome != clusterapi.TransferDone || res.Leader != target.ID {
		t.Fatalf("transfer to the follower %s: %d %s %v; want 200 with outcome %q and the new leader", target.ID, code, body, err, clusterapi.TransferDone)
	}

	leader = stableLeader(t, c)
	paused := others(leader)[0]
	paused.Pause()
	code, body, err = c.Transfer(ctx, leader, paused.ID)
	paused.Resume()
	res = clusterapi.TransferResult{}
	if err != nil || code != http.StatusAccepted || json.Unmarshal([]byte(body), &res) != nil || res.Outcome != clusterapi.TransferUnknown {
		t.Fatalf("transfer to the paused follower %s: %d %s %v; want 202 with outcome %q", paused.ID, code, body, err, clusterapi.TransferUnknown)
	}

	if code, body, _ := c.Transfer(ctx, leader, "kv-9"); code != http.StatusNotFound {
		t.Fatalf("transfer to a member that does not exist: %d %s", code, body)
	}
	stableLeader(t, c)
}

// ?consistency=strict makes the leader confirm its leadership with the
// voters for a read, also one a follower forwards, even while its read
// lease holds, without writing a log entry (no fsync: confirmRound); a
// strict read never answers while the leader cannot reach a majority.
// Linearizable reads within the lease make no round at all.
func TestStrictReadsThroughAFollower(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	leader := stableLeader(t, c)
	var followers []*harness.Member
	for _, m := range c.Members() {
		if m != leader {
			followers = append(followers, m)
		}
	}
	follower := followers[0]
	if code, _, err := kv(c, follower, "PUT", "k", "v", ""); err != nil || code != 201 {
		t.Fatalf("PUT: %d %v", code, err)
	}
	lastIndex := func() uint64 {
		var s clusterapi.NodeStatus
		if err := getJSON(c, leader, clusterapi.PathStatus, &s); err != nil {
			t.Fatal(err)
		}
		return s.LastIndex
	}
	reads := func(query string) uint64 {
		before := lastIndex()
		for i := 0; i < 10; i++ {
			if code, body, err := kv(c, follower, "GET", "k", "", query); err != nil || code != 200 || body != "v" {
				t.Fatalf("GET ?%s on a follower: %d %q %v", query, code, body, err)
			}
		}
		return lastIndex() - before
	}
	if entries := reads("consistency=strict"); entries > 1 {
		t.Fatalf("10 strict reads through a follower wrote %d log entries: confirmation rounds write none", entries)
	}
	// The lease lasts 250ms; ten reads on loopback take a fraction of it,
	// so at most a couple of rounds renew it.
	if rounds := reads(""); rounds > 3 {
		t.Fatalf("10 linearizable reads through a follower made %d quorum rounds: no lease?", rounds)
	}
	if code, body, _ := kv(c, follower, "GET", "k", "", "consistency=sequential"); code != 400 || !strings.Contains(body, "linearizable (the default), strict or stale") {
		t.Fatalf("a bad consistency: %d %q", code, body)
	}

	// Both followers paused: the leader cannot confirm, so a strict read
	// on it fails (after the request's deadline) rather than answer.
	for _, f := range followers {
		f.Pause()
	}
	code, body, _ := kv(c, leader, "GET", "k", "", "consistency=strict")
	for _, f := range followers {
		f.Resume()
	}
	if code == 200 {
		t.Fatalf("a strict read on a leader cut off from every voter answered %q", body)
	}
	if code, body, err := kv(c, leader, "GET", "k", "", "consistency=strict"); err != nil || code != 200 || body != "v" {
		t.Fatalf("a strict read once the followers are back: %d %q %v", code, body, err)
	}
}
