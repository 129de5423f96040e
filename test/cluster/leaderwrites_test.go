package cluster_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
)

// A client with LeaderWrites learns the leader from a follower's answer to
// a write, and then writes straight to it: with that follower paused,
// its writes still succeed (a client without it would wait for the
// follower). Over REST and over gRPC.
func TestClientWritesStraightToTheLeader(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	leader := stableLeader(t, c)
	follower, _ := followers(c, leader)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, c.CA.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proto          client.Protocol
		endpoint, want string
	}{
		{client.REST, follower.API, leader.API},
		{client.GRPC, "https://" + follower.GRPC, leader.GRPC},
	} {
		t.Run(string(tc.proto), func(t *testing.T) {
			cl, err := client.New(client.Config{Endpoints: []string{tc.endpoint}, CAFile: caFile, Protocol: tc.proto, LeaderWrites: true, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			// A follower learns the leader's gRPC address in the
			// background: the first answers may not name it yet.
			for i := 0; cl.Leader() != tc.want; i++ {
				if i == 50 {
					t.Fatalf("after %d writes through %s the client writes to %q, want the leader %s", i, follower.ID, cl.Leader(), tc.want)
				}
				if err := cl.Put(ctx, "through-the-follower", []byte("v")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			follower.Pause()
			defer follower.Resume()
			key := "straight-" + string(tc.proto)
			if err := cl.Put(ctx, key, []byte("to the leader")); err != nil {
				t.Fatalf("a write with the follower paused: %v", err)
			}
			if code, body, err := kv(c, leader, "GET", key, "", "consistency=stale"); err != nil || code != 200 || body != "to the leader" {
				t.Fatalf("GET %s on the leader: %d %q %v", key, code, body, err)
			}
			if err := cl.Delete(ctx, key); err != nil {
				t.Fatalf("a delete with the follower paused: %v", err)
			}
		})
	}
}
