package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// A non-voter replicates and serves reads (stale locally, linearizable
// through the leader) but does not count towards the quorum.
func TestNonVoterServesReadsButDoesNotVote(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	replica, err := c.Add()
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(ctx, replica, false); err != nil {
		t.Fatal(err)
	}
	info := waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	if len(info.Members) != 4 {
		t.Fatalf("members %+v", info.Members)
	}
	for i := 0; i < 20; i++ {
		if code, _, err := kv(c, c.Member(i%3), "PUT", fmt.Sprint("k", i), fmt.Sprint(i), ""); err != nil || code != 201 {
			t.Fatalf("PUT: %d %v", code, err)
		}
	}
	// A linearizable read on the replica sees the last write at once.
	if code, body, err := kv(c, replica, "GET", "k19", "", ""); err != nil || code != 200 || body != "19" {
		t.Fatalf("linearizable read on the non-voter: %d %q %v", code, body, err)
	}
	// Writes through the replica are forwarded to the leader.
	if code, _, err := kv(c, replica, "PUT", "via-replica", "x", ""); err != nil || code != 201 {
		t.Fatalf("write through the non-voter: %d %v", code, err)
	}
	// Two of three voters gone: no quorum, although three processes run.
	c.Member(1).Kill()
	c.Member(2).Kill()
	if code, _, _ := kv(c, c.Member(0), "PUT", "no-quorum", "x", ""); code != 503 {
		t.Fatalf("write without a quorum of voters = %d, want 503", code)
	}
	// The replica still serves its copy.
	testutil.Eventually(t, 10*time.Second, "a stale read on the non-voter", func() error {
		code, body, err := kv(c, replica, "GET", "via-replica", "", "consistency=stale")
		if err != nil || code != 200 || body != "x" {
			return fmt.Errorf("stale read on the non-voter: %d %q %v", code, body, err)
		}
		return nil
	})
	if code, _, _ := kv(c, replica, "GET", "via-replica", "", ""); code != 503 {
		t.Fatalf("linearizable read without a quorum = %d, want 503", code)
	}
}
