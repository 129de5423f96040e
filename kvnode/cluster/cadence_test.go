package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestSnapshotBudget(t *testing.T) {
	for _, tc := range []struct {
		snap, min int64
		ratio     float64
		want      int64
	}{
		{0, 64 << 20, 0.5, 64 << 20},         // no snapshot yet: the floor
		{100 << 20, 64 << 20, 0.5, 64 << 20}, // a small store: the floor
		{2 << 30, 64 << 20, 0.5, 1 << 30},    // a large one: half of it
		{2 << 30, 64 << 20, 2, 4 << 30},
	} {
		if got := snapshotBudget(tc.snap, tc.ratio, tc.min); got != tc.want {
			t.Errorf("snapshotBudget(%d, %v, %d) = %d, want %d", tc.snap, tc.ratio, tc.min, got, tc.want)
		}
	}
}

// With the entry threshold out of reach, the node snapshots when its log
// has grown by the budget, and again each time it grows by it since the
// last snapshot, not on every check.
func TestSnapshotCadenceFollowsLogBytes(t *testing.T) {
	dir := t.TempDir()
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: dir, PeerBind: "127.0.0.1:0", Bootstrap: true, Fast: true,
		SnapshotThreshold: 1 << 30, SnapshotInterval: time.Hour,
		SnapshotLogRatio: 0.5, SnapshotMinLogBytes: 64 << 10, SnapshotCheck: 20 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	svc := core.NewService(st, n, core.DefaultLimits)
	waitLeader(t, svc)
	snapIndex := func() int {
		metas, err := n.snaps.List()
		if err != nil || len(metas) == 0 {
			return 0
		}
		return int(metas[0].Index)
	}
	ctx := context.Background()
	value := make([]byte, 1024)
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if err := svc.Put(ctx, fmt.Sprintf("k%05d", i), value); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 20) // ~20 KiB: under the 64 KiB floor
	time.Sleep(200 * time.Millisecond)
	if snapIndex() != 0 {
		t.Fatal("a snapshot was taken before the log reached the floor")
	}
	put(20, 100) // past the floor
	testutil.Eventually(t, 10*time.Second, "a snapshot", func() error {
		if snapIndex() == 0 {
			return fmt.Errorf("none yet (log %d bytes)", n.log.Size())
		}
		return nil
	})
	first := snapIndex()
	time.Sleep(200 * time.Millisecond)
	if again := snapIndex(); again != first {
		t.Fatalf("snapshot at %d, then another at %d without new writes past the budget", first, again)
	}
	put(100, 200)
	testutil.Eventually(t, 10*time.Second, "a second snapshot", func() error {
		if snapIndex() <= first {
			return fmt.Errorf("still the one at %d", first)
		}
		return nil
	})
}
