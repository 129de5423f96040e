package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// writer PUTs distinct keys through rotating members until stopped and
// remembers what was acknowledged.
type writer struct {
	c     *harness.Cluster
	stop  chan struct{}
	done  sync.WaitGroup
	mu    sync.Mutex
	acked map[string]string
	fails atomic.Int64
}

func startWriter(c *harness.Cluster, clients int) *writer {
	w := &writer{c: c, stop: make(chan struct{}), acked: map[string]string{}}
	for cl := 0; cl < clients; cl++ {
		w.done.Add(1)
		go func(cl int) {
			defer w.done.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				members := c.Members()
				m := members[(cl+i)%len(members)]
				if !m.Running() {
					continue
				}
				key, val := fmt.Sprintf("w%d/%d", cl, i), fmt.Sprintf("value-%d-%d", cl, i)
				code, _, err := kv(c, m, "PUT", key, val, "")
				if err == nil && code == 201 {
					w.mu.Lock()
					w.acked[key] = val
					w.mu.Unlock()
				} else {
					w.fails.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(cl)
	}
	return w
}

func (w *writer) finish() map[string]string {
	close(w.stop)
	w.done.Wait()
	return w.acked
}

// verify reads every acknowledged write through every running member.
func verify(t *testing.T, c *harness.Cluster, acked map[string]string) {
	t.Helper()
	for _, m := range c.Members() {
		if !m.Running() {
			continue
		}
		for k, v := range acked {
			code, body, err := kv(c, m, "GET", k, "", "")
			if err != nil || code != 200 || body != v {
				t.Fatalf("acknowledged %s=%s read through %s: %d %q %v", k, v, m.ID, code, body, err)
			}
		}
	}
}

func waitVoters(t *testing.T, c *harness.Cluster, want ...string) clusterapi.Cluster {
	t.Helper()
	var info clusterapi.Cluster
	testutil.Eventually(t, 30*time.Second, "voters "+strings.Join(want, ","), func() error {
		var err error
		info, err = c.Info(context.Background())
		if err != nil {
			return err
		}
		got := info.Voters()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) || info.Leader == "" {
			return fmt.Errorf("voters %v leader %q, want %v", got, info.Leader, want)
		}
		return nil
	})
	return info
}

// 1 → 3 → 5 → 3 voters while clients write: nothing acknowledged is lost,
// and every member serves it.
func TestGrowAndShrinkWhileWriting(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 1); err != nil {
		t.Fatal(err)
	}
	w := startWriter(c, 4)
	for i := 1; i < 5; i++ {
		m, err := c.Add()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.Join(ctx, m, true); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			waitVoters(t, c, "kv-0", "kv-1", "kv-2")
		}
	}
	info := waitVoters(t, c, "kv-0", "kv-1", "kv-2", "kv-3", "kv-4")
	first := info.ClusterID
	time.Sleep(300 * time.Millisecond)
	// Shrink back to 3: take out two members, the leader among them if it
	// is one of them (it hands leadership over first).
	for _, i := range []int{4, 3} {
		m := c.Member(i)
		if err := c.Remove(ctx, m); err != nil {
			t.Fatal(err)
		}
		m.Stop()
	}
	info = waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	if info.ClusterID != first || first == "" {
		t.Fatalf("cluster ID changed from %q to %q", first, info.ClusterID)
	}
	acked := w.finish()
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged (%d failed)", len(acked), w.fails.Load())
	}
	verify(t, c, acked)
	t.Logf("%d writes acknowledged during 1→3→5→3, %d attempts failed (elections, forwarding)", len(acked), w.fails.Load())

	// Removing an absent member, or adding a present one, changes nothing.
	if err := c.Remove(ctx, c.Member(4)); err != nil {
		t.Fatalf("removing an absent member: %v", err)
	}
	if err := c.Join(ctx, c.Member(1), true); err != nil {
		t.Fatalf("adding a present member: %v", err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
}

// A removed member can have its volume wiped and be added again; it
// catches up from a snapshot and the log.
func TestRemovedMemberRejoinsWithEmptyVolume(t *testing.T) {
	c := newCluster(t, "--snapshot-threshold", "200", "--snapshot-interval", "200ms")
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	w := startWriter(c, 4)
	time.Sleep(2 * time.Second)
	m := c.Member(2)
	if err := c.Remove(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if err := m.WipeData(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // writes continue on two voters and snapshots compact the log
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	acked := w.finish()
	verify(t, c, acked)
}

// A member that lost its volume while still in the configuration does not
// start a cluster of its own: the leader brings it back, and a bootstrap
// call on it is refused.
func TestLostVolumeDoesNotBootstrapANewCluster(t *testing.T) {
	c := newCluster(t, "--snapshot-threshold", "100", "--snapshot-interval", "200ms")
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var acked = map[string]string{}
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprint(i)
		if code, _, err := kv(c, c.Member(i%3), "PUT", k, v, ""); err != nil || code != 201 {
			t.Fatalf("PUT: %d %v", code, err)
		}
		acked[k] = v
	}
	m := c.Member(2)
	m.Kill()
	if err := m.WipeData(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	err = harness.Retry(ctx, func() error {
		var self clusterapi.NodeStatus
		resp, err := c.Peer.Get(m.API + clusterapi.PathStatus)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := jsonDecode(resp, &self); err != nil {
			return err
		}
		if self.ClusterID != info.ClusterID {
			return fmt.Errorf("cluster ID %q, want %q", self.ClusterID, info.ClusterID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var aerr *harness.AdminError
	if err := c.AdminDo(ctx, m, http.MethodPost, clusterapi.PathBootstrap, nil, nil); !errors.As(err, &aerr) || aerr.Status != 409 {
		t.Fatalf("bootstrap on a member that lost its volume = %v, want 409", err)
	}
	// Its copy becomes complete: stale reads on it see every write once it
	// has caught up (the cluster ID above may come from the first entries).
	err = harness.Retry(ctxFor(t, 30*time.Second), func() error {
		for k, v := range acked {
			if code, body, err := kv(c, m, "GET", k, "", "consistency=stale"); err != nil || code != 200 || body != v {
				return fmt.Errorf("%s on the restored member: %d %q %v", k, code, body, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
}
