package cluster_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// Snapshots are taken by the log-size rule while clients keep writing,
// and they restore: a member whose volume was wiped installs the leader's
// snapshot, and a member that restarts restores its own. Nothing
// acknowledged is lost. raft never checks the entry threshold here (once an
// hour), so every snapshot comes from the log's bytes; the threshold only
// keeps the trailing log short (300 entries), so that the wiped member
// needs a snapshot.
func TestSnapshotsTakenWhileWritingRestore(t *testing.T) {
	c := newCluster(t, "--snapshot-threshold", "300", "--snapshot-interval", "1h", "--snapshot-min-log-bytes", "32768", "--log-level", "info")
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	w := startWriter(c, 4)
	for _, m := range c.Members() {
		testutil.Eventually(t, time.Minute, m.ID+" snapshots by the log's size", func() error {
			if n := strings.Count(m.Logs(), "snapshot taken: the log grew past its budget"); n < 2 {
				return fmt.Errorf("%d snapshots so far", n)
			}
			return nil
		})
	}
	// A wiped member: the leader sends it a snapshot taken while writing.
	m := c.Member(2)
	if err := c.Remove(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if err := m.WipeData(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // writes continue; snapshots compact the log
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	if !strings.Contains(m.Logs(), "Installed remote snapshot") {
		t.Fatal("the wiped member caught up without a snapshot; the test proves nothing")
	}
	// A restarted member restores its own snapshot, then replays its log.
	r := c.Member(0)
	r.Stop()
	time.Sleep(time.Second)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	time.Sleep(time.Second)
	acked := w.finish()
	if !strings.Contains(r.Logs(), "restored from snapshot") {
		t.Fatal("the restarted member did not restore a snapshot")
	}
	if len(acked) < 100 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	verify(t, c, acked)
	t.Logf("%d writes acknowledged, %d attempts failed", len(acked), w.fails.Load())
}
