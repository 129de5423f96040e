package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// A leader stopped with SIGTERM hands leadership over before it stops
// serving: during its drain delay another member leads, and writes
// through a follower go on. Before, it closed its listener first and
// handed over only then, so forwarded writes failed in between.
func TestStoppingLeaderHandsOverBeforeItStopsServing(t *testing.T) {
	const drain = 4 * time.Second
	c := newCluster(t, "--drain-delay", drain.String())
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	info := waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	var leader, follower *harness.Member
	for _, m := range c.Members() {
		if m.ID == info.Leader {
			leader = m
		} else if follower == nil {
			follower = m
		}
	}
	stopped := make(chan struct{})
	sent := time.Now()
	go func() { leader.Stop(); close(stopped) }()

	testutil.Eventually(t, drain/2, "another leader during the old one's drain delay", func() error {
		var v clusterapi.Cluster
		if err := c.AdminDo(context.Background(), follower, http.MethodGet, clusterapi.PathCluster, nil, &v); err != nil {
			return err
		}
		if v.Leader == "" || v.Leader == leader.ID {
			return fmt.Errorf("leader %q", v.Leader)
		}
		return nil
	})
	select {
	case <-stopped:
		t.Fatalf("the old leader exited %v after SIGTERM, before its drain delay of %v", time.Since(sent), drain)
	default:
	}
	testutil.Eventually(t, drain/2, "a write through a follower", func() error {
		if code, body, err := kv(c, follower, "PUT", "during-drain", "x", ""); err != nil || code != 201 {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		return nil
	})
	<-stopped
}
