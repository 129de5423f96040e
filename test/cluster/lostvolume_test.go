package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

// leaderOf returns the member that leads, as a running member reports it.
func leaderOf(t *testing.T, c *harness.Cluster) *harness.Member {
	t.Helper()
	var leader *harness.Member
	err := harness.Retry(ctxFor(t, 30*time.Second), func() error {
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		for _, m := range c.Members() {
			if m.ID == info.Leader {
				leader = m
				return nil
			}
		}
		return fmt.Errorf("no leader yet")
	})
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// followers returns the two members of a 3-member cluster other than
// leader, in member order.
func followers(c *harness.Cluster, leader *harness.Member) (first, second *harness.Member) {
	for _, m := range c.Members() {
		switch {
		case m == leader:
		case first == nil:
			first = m
		default:
			second = m
		}
	}
	return first, second
}

// readsBack reads every acknowledged write through m (linearizably),
// waiting while m answers 503; a wrong or missing value fails the test.
func readsBack(t *testing.T, c *harness.Cluster, m *harness.Member, acked map[string]string) error {
	t.Helper()
	for k, v := range acked {
		err := harness.Retry(ctxFor(t, 30*time.Second), func() error {
			code, body, err := kv(c, m, "GET", k, "", "")
			switch {
			case err != nil:
				return err
			case code == 503:
				return fmt.Errorf("503 %s", body)
			case code != 200 || body != v:
				t.Fatalf("acknowledged %s=%s reads %d %q through %s", k, v, code, body, m.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// isolate cuts m off from every other member, both ways.
func isolate(c *harness.Cluster, m *harness.Member) {
	m.Proxy().Cut()
	for _, o := range c.Members() {
		if o != m {
			o.Proxy().Cut(m.Index)
		}
	}
}

func healAll(c *harness.Cluster) {
	for _, o := range c.Members() {
		o.Proxy().Heal()
	}
}

func selfStatus(c *harness.Cluster, m *harness.Member) (clusterapi.NodeStatus, error) {
	var self clusterapi.NodeStatus
	resp, err := c.Peer.Get(m.API + clusterapi.PathStatus)
	if err != nil {
		return self, err
	}
	defer resp.Body.Close()
	err = jsonDecode(resp, &self)
	return self, err
}

// A voter that lost its volume must not vote: a follower is cut off, the
// leader and the other follower commit writes, that follower's volume is
// lost and it restarts empty, and the leader dies. The cut-off follower,
// which lacks the writes, must not be elected with the emptied node's vote;
// once the old leader is back, every acknowledged write is there. Then the
// emptied member is removed, added again and promoted, and votes again.
func TestLostVolumeDoesNotVote(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(t, c)
	behind, emptied := followers(c, leader)
	before, err := selfStatus(c, emptied)
	if err != nil {
		t.Fatal(err)
	}
	if before.Incarnation == "" || !before.Admitted {
		t.Fatalf("a joined voter reports incarnation %q admitted=%v", before.Incarnation, before.Admitted)
	}

	isolate(c, behind)
	acked := map[string]string{}
	for i := 0; i < 50; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprint(i)
		if code, body, err := kv(c, leader, "PUT", k, v, ""); err != nil || code != 201 {
			t.Fatalf("PUT %s: %d %s %v", k, code, body, err)
		}
		acked[k] = v
	}
	emptied.Kill()
	if err := emptied.WipeData(); err != nil {
		t.Fatal(err)
	}
	if err := emptied.Start(); err != nil {
		t.Fatal(err)
	}
	leader.Kill()
	healAll(c)

	// The two that are left: one lacks the writes, the other may not vote.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range []*harness.Member{behind, emptied} {
			if self, err := selfStatus(c, m); err == nil && self.LeaderID != "" && self.LeaderID != leader.ID {
				t.Fatalf("%s reports leader %s in term %d: elected without the acknowledged writes", m.ID, self.LeaderID, self.Term)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	after, err := selfStatus(c, emptied)
	if err != nil {
		t.Fatal(err)
	}
	if after.Incarnation == before.Incarnation || after.Admitted {
		t.Fatalf("the emptied member reports incarnation %q admitted=%v; want a new, pending one (was %q)", after.Incarnation, after.Admitted, before.Incarnation)
	}

	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	if err := readsBack(t, c, behind, acked); err != nil {
		t.Fatal(err)
	}

	// Re-admission: out of the configuration, in again as a non-voter,
	// promoted once caught up.
	if err := c.Remove(ctx, emptied); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(ctx, emptied, true); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	if self, err := selfStatus(c, emptied); err != nil || !self.Admitted || self.Incarnation != after.Incarnation {
		t.Fatalf("after its promotion the member reports %+v %v; want admitted, incarnation %s", self, err, after.Incarnation)
	}
	var info clusterapi.Cluster
	if err := c.AdminDo(ctx, emptied, http.MethodGet, clusterapi.PathCluster, nil, &info); err != nil || info.Incarnation != after.Incarnation || !info.Admitted {
		t.Fatalf("GET %s on the member: incarnation %q admitted=%v %v", clusterapi.PathCluster, info.Incarnation, info.Admitted, err)
	}
	// It now votes: with the member that was behind down, the other two
	// elect a leader.
	behind.Kill()
	leader2 := leaderOf(t, c)
	if leader2 == behind {
		t.Fatal("a killed member leads")
	}
	if code, body, err := kv(c, emptied, "PUT", "after", "x", ""); err != nil || code != 201 {
		t.Fatalf("PUT with the re-admitted member as the second voter: %d %s %v", code, body, err)
	}
}

// A member recorded under an address it no longer answers on (a pod
// recreated with a new IP) is reachable again, still a voter, once the
// leader is given its current address.
func TestMemberAddressIsUpdated(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	m := c.Member(2)
	setAddress := func(addr string) {
		t.Helper()
		req := clusterapi.AddMemberRequest{ID: m.ID, Address: addr, API: m.API}
		if err := harness.Retry(ctx, func() error { return c.AdminDo(ctx, c.Member(0), http.MethodPost, clusterapi.PathMembers, req, nil) }); err != nil {
			t.Fatalf("address %s: %v", addr, err)
		}
	}
	gone := "127.0.0.1:1" // nothing answers there
	setAddress(gone)
	if code, body, err := kv(c, c.Member(0), "PUT", "while-away", "1", ""); err != nil || code != 201 {
		t.Fatalf("PUT: %d %s %v", code, body, err)
	}
	info := waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	for _, x := range info.Members {
		if x.ID == m.ID && x.Address != gone {
			t.Fatalf("%s recorded at %s, want %s", m.ID, x.Address, gone)
		}
	}
	setAddress(m.PeerAddr)
	info = waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	for _, x := range info.Members {
		if x.ID == m.ID && x.Address != m.PeerAddr {
			t.Fatalf("%s recorded at %s, want %s", m.ID, x.Address, m.PeerAddr)
		}
	}
	if code, body, err := kv(c, c.Member(0), "PUT", "back", "1", ""); err != nil || code != 201 {
		t.Fatalf("PUT: %d %s %v", code, body, err)
	}
	err := harness.Retry(ctxFor(t, 20*time.Second), func() error {
		if code, _, err := kv(c, m, "GET", "back", "", "consistency=stale"); err != nil || code != 200 {
			return fmt.Errorf("stale read on %s: %d %v", m.ID, code, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Two of three voters lose their volumes: no removal is safe (it would
// leave a configuration without a healthy majority), so once they have
// caught up they are admitted where they are (the operator's Admit, a
// promotion of a voter). Then they elect a leader without the third.
func TestLostVolumesAreAdmittedInPlace(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(t, c)
	acked := map[string]string{}
	put := func(k, v string) {
		t.Helper()
		if code, body, err := kv(c, leader, "PUT", k, v, ""); err != nil || code != 201 {
			t.Fatalf("PUT %s: %d %s %v", k, code, body, err)
		}
		acked[k] = v
	}
	put("before", "1")
	var lost []*harness.Member
	for _, m := range c.Members() {
		if m == leader {
			continue
		}
		m.Kill()
		if err := m.WipeData(); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		lost = append(lost, m)
	}
	put("while-lost", "2") // pending members still store appended entries
	for _, m := range lost {
		promote := clusterapi.MemberPath(clusterapi.PathPromote, m.ID)
		if err := harness.Retry(ctx, func() error { return c.AdminDo(ctx, leader, http.MethodPost, promote, nil, nil) }); err != nil {
			t.Fatalf("admit %s: %v", m.ID, err)
		}
		if self, err := selfStatus(c, m); err != nil || !self.Admitted {
			t.Fatalf("%s after its admission: %+v %v", m.ID, self, err)
		}
	}
	leader.Kill()
	if err := readsBack(t, c, lost[0], acked); err != nil {
		t.Fatalf("the two admitted members serve no read: %v", err)
	}
}

// A leadership transfer to "any voter" never picks a member that lost its
// volume and is not admitted: it would refuse (or, acting on it, depose the
// leader without being able to win).
func TestTransferAvoidsPendingMembers(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(t, c)
	var pending *harness.Member
	for _, m := range c.Members() {
		if m != leader {
			pending = m
			break
		}
	}
	pending.Kill()
	if err := pending.WipeData(); err != nil {
		t.Fatal(err)
	}
	if err := pending.Start(); err != nil {
		t.Fatal(err)
	}
	// It catches up as a voter, and raft's own pick (the highest next
	// index) may well be this member.
	if code, body, err := kv(c, leader, "PUT", "k", "v", ""); err != nil || code != 201 {
		t.Fatalf("PUT: %d %s %v", code, body, err)
	}
	for i := 0; i < 4; i++ {
		code, body, err := c.Transfer(ctx, leader, "")
		if err != nil || code != 200 {
			t.Fatalf("transfer %d from %s: %d %s %v", i, leader.ID, code, body, err)
		}
		leader = leaderOf(t, c)
		if leader == pending {
			t.Fatalf("transfer %d handed leadership to %s, which is not admitted", i, pending.ID)
		}
	}
}
