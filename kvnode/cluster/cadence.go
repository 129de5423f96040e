package cluster

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults of the snapshot cadence (Config.SnapshotLogRatio,
// SnapshotMinLogBytes, SnapshotCheck).
const (
	DefaultSnapshotLogRatio    = 0.5
	DefaultSnapshotMinLogBytes = 64 << 20
	defaultSnapshotCheck       = time.Second
)

// snapshotBudget is how many log bytes may pile up after a snapshot of
// snapBytes before the next one: ratio times the snapshot, at least min.
// The cost of snapshots then grows with the data no faster than the writes
// do (each log byte pays for at most 1/ratio snapshot bytes), and a
// restart replays at most ratio times the snapshot on top of restoring it.
func snapshotBudget(snapBytes int64, ratio float64, minBytes int64) int64 {
	return max(minBytes, int64(float64(snapBytes)*ratio))
}

// snapshotCadence takes a snapshot whenever the log has grown by the
// budget since the last one, checked every SnapshotCheck. Checking costs
// two atomic loads and the log's size; it runs on every member, as each
// compacts its own log. raft's own SnapshotThreshold (entries, checked
// every SnapshotInterval) still applies: it caps the entries between
// snapshots when they are small.
//
// The log's growth is its size now less the smallest size seen since the
// last snapshot (persisted here or installed from the leader): raft
// compacts right after persisting, so the size drops to the new floor.
// At start the floor is zero, so a node that restarted with a long log
// counts all of it.
func (n *Node) snapshotCadence(f *fsm) {
	defer n.wg.Done()
	check := n.cfg.SnapshotCheck
	seen := f.snaps.Load()
	var floor int64
	var retryAt time.Time
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		size := n.log.Size()
		if g := f.snaps.Load(); g != seen {
			seen, floor = g, size
		}
		floor = min(floor, size)
		budget := snapshotBudget(f.snapBytes.Load(), n.cfg.SnapshotLogRatio, n.cfg.SnapshotMinLogBytes)
		if size-floor < budget || time.Now().Before(retryAt) {
			continue
		}
		start := time.Now()
		err := n.raft.Snapshot().Error()
		switch {
		case err == nil:
			n.cfg.Logger.Info("snapshot taken: the log grew past its budget", "log-bytes", size-floor, "budget", budget, "snapshot-bytes", f.snapBytes.Load(), "took", time.Since(start).String())
		case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
		default:
			n.cfg.Logger.Warn("snapshot failed; retrying in 10s", "error", err)
			retryAt = time.Now().Add(10 * time.Second)
		}
	}
}
