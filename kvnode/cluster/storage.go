package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// The disk budget. A node whose volume fills up must not fail: a log that
// cannot append fails for good, a snapshot that cannot be written leaves
// the log uncompacted, and raft panics when it cannot record a term. So
// the node keeps room, at all times, for what it needs to get out of a
// full disk by itself:
//
//   - the next snapshot: the store's encoded size now
//     (core.Store.SnapshotBytes), written while the previous snapshot and
//     the log are still on disk;
//   - the log until that snapshot has compacted it: one more segment
//     (segments are fitted to the volume, fitSegment);
//   - a floor, for what goes on while it is full: DELETEs, raft's term and
//     vote (the stable file), its configuration and no-op entries, the
//     compaction's record of the log's new start, the snapshot's metadata.
//
// reserve = SnapshotBytes + segment + floor. A PUT is admitted while the
// room left after it, free space plus the log's allocated but unused space
// less the reserve, stays positive; a PUT of b bytes costs 2b (b in the
// log now, b in the next snapshot). Refused, it is answered 507 with
// nothing written (core.ErrNoSpace), and the node is full until the room
// is back above one segment (so that it does not flap at every write).
// DELETEs are admitted while they leave the next snapshot's room, a
// segment and half the floor, and a snapshot may not write into the
// floor's last quarter: the rest is raft's. A write's share is held until
// its entry settles. When the room runs low
// the node snapshots and compacts with no trailing entries kept, which
// gives back whatever log the snapshot covers. docs/safety.md has the
// argument.

// fitSegment is the segment size for a volume of capacity bytes: small
// against the volume, since the log's last segment is preallocated whole
// and a compaction frees only whole segments.
func fitSegment(capacity uint64) int64 {
	return max(1<<20, min(txlog.DefaultSegmentBytes, int64(capacity/32)&^(64<<10-1)))
}

// storageFloor is the room only DELETEs and raft's own writes may use.
func storageFloor(capacity uint64) int64 {
	return max(4<<20, min(256<<20, int64(capacity/32)))
}

// A snapshot sink looks at the free space after every checkEvery bytes.
const checkEvery = 256 << 10

// volumeSpace returns the bytes of dir's volume that are free (for an
// unprivileged user: kvnode does not run as root) and its capacity.
func volumeSpace(dir string) (free, capacity uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

type storage struct {
	dir   string
	log   *txlog.Log
	store *core.Store
	// segment is the room one more segment takes.
	segment int64

	// mu makes a write's check and its admission one step, so that
	// concurrent writes cannot all take the same room.
	mu sync.Mutex
	// pending is the bytes of PUTs admitted whose entries have not
	// settled (applied, or refused): they are not yet in the
	// measurements. pendingDeletes is the same for DELETEs.
	pending        int64
	pendingDeletes int64
	// applied counts the bytes of entries applied since the watcher was
	// last woken for them.
	appliedBytes atomic.Int64
	// full is set when a PUT is refused, cleared when the room is back
	// above one segment.
	full atomic.Bool
	// writing is the bytes that snapshots in progress have written: they
	// come out of the snapshot's share of the reserve, not the room.
	writing atomic.Int64
	// low wakes watchStorage at once when the room runs low.
	low chan struct{}
	// statfs is volumeSpace; tests measure a volume of their own making.
	statfs func(dir string) (free, capacity uint64, err error)
}

func newStorage(dir string, log *txlog.Log, store *core.Store) *storage {
	return &storage{dir: dir, log: log, store: store, segment: log.SegmentBytes() + 64<<10, low: make(chan struct{}, 1), statfs: volumeSpace}
}

// space is one measurement of the budget.
type space struct {
	free, capacity uint64
	floor, reserve int64
	// room is what PUTs may still use: negative when the reserve is
	// already short.
	room int64
	// raw is the space left for anything at all: free plus the log's
	// unused allocation.
	raw int64
	// writing is what snapshots in progress have written.
	writing int64
	err     error
}

// measure takes a measurement; the caller holds mu.
func (s *storage) measure() space {
	// What snapshots have written is read before and after the free
	// space, and the lesser taken: a write that lands in between is not
	// yet in the free space the measurement saw, and a snapshot that
	// completes in between may have had the one before it removed, whose
	// space the free space does show. Either way the room comes out
	// under, never over.
	writing := s.writing.Load()
	free, capacity, err := s.statfs(s.dir)
	writing = min(writing, s.writing.Load())
	if err != nil {
		return space{err: err}
	}
	sp := space{free: free, capacity: capacity, floor: storageFloor(capacity), writing: writing}
	sp.reserve = s.store.SnapshotBytes() + s.segment + sp.floor
	sp.raw = int64(free) + s.log.Unused()
	sp.room = sp.raw + writing - sp.reserve - 2*s.pending - s.pendingDeletes
	return sp
}

// update records whether the node is full after a measurement: it stops
// being full once the room is back above a segment.
func (s *storage) update(sp space) bool {
	if sp.err == nil && s.full.Load() && sp.room >= s.segment {
		s.full.Store(false)
	}
	if sp.err == nil && sp.room < 2*s.segment {
		s.wake()
	}
	return s.full.Load()
}

func (s *storage) wake() {
	select {
	case s.low <- struct{}{}:
	default:
	}
}

// admission is a write's share of the room, held from its admission
// until its entry settles.
type admission struct {
	s          *storage
	put, del   int64
	once       sync.Once
	handedOver atomic.Bool
}

func (a *admission) release() {
	a.once.Do(func() {
		if a.s == nil {
			return
		}
		a.s.mu.Lock()
		a.s.pending -= a.put
		a.s.pendingDeletes -= a.del
		a.s.mu.Unlock()
	})
}

// done is called when the request has finished. It releases the share
// unless holdUntil handed it to the entry.
func (a *admission) done() {
	if !a.handedOver.Load() {
		a.release()
	}
}

// holdUntil keeps the share until f settles: a request that gives up
// (its context ends) leaves its entry on its way into the log and the
// store, where the measurements do not yet see it.
func (a *admission) holdUntil(f raft.Future) {
	if a.handedOver.Swap(true) {
		return
	}
	go func() {
		_ = f.Error()
		a.release()
	}()
}

// admitPut admits a PUT of an event of size bytes, or refuses it with
// core.ErrNoSpace.
func (s *storage) admitPut(size int) (*admission, error) {
	b := int64(size) + 64 // the record's framing
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.measure()
	if sp.err != nil {
		// Not knowing is no reason to refuse: the log still refuses,
		// without failing, what it has no room for.
		return &admission{}, nil
	}
	if s.update(sp) || sp.room < 2*b {
		s.full.Store(true)
		s.wake()
		return nil, fmt.Errorf("%w: %d bytes free of %d, %d kept for a snapshot and DELETEs; delete data, or grow the volume", core.ErrNoSpace, sp.free, sp.capacity, sp.reserve)
	}
	s.pending += b
	return &admission{s: s, put: b}, nil
}

// admitDelete admits a DELETE of an event of size bytes that takes frees
// bytes out of the next snapshot, or refuses it with core.ErrNoSpace.
//
// A DELETE that frees at least what it writes (of a key held, with a
// value) only has to leave a segment and half the floor, with the
// DELETEs in flight counted: it takes b bytes of free space and the next
// snapshot shrinks by at least b once it is applied, so free space less
// the snapshot's room does not fall, and a full node can always be
// emptied by deleting. Any other DELETE (of a key not held, which frees
// nothing) must also leave the next snapshot's room, or DELETEs alone
// could fill the volume until no snapshot can be taken and nothing
// compacts. What a snapshot in progress wrote comes out of the
// snapshot's room, not the DELETEs'.
func (s *storage) admitDelete(size int, frees int64) (*admission, error) {
	b := int64(size) + 64
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.measure()
	if sp.err != nil {
		return &admission{}, nil
	}
	s.update(sp)
	room := sp.raw + sp.writing - s.segment - sp.floor/2 - s.pendingDeletes
	if frees < b {
		room -= s.store.SnapshotBytes()
	}
	if room < b {
		// The room comes back only by a snapshot and a compaction.
		s.wake()
		return nil, fmt.Errorf("%w: %d bytes free of %d, too few even for a DELETE", core.ErrNoSpace, sp.free, sp.capacity)
	}
	s.pendingDeletes += b
	return &admission{s: s, del: b}, nil
}

// applied counts the bytes of entries applied, and wakes the watcher
// after each quarter segment of them: a follower's log grows with what it
// applies, and no PUT it admits tells it that the room runs low.
func (s *storage) applied(n int) {
	if total := s.appliedBytes.Add(int64(n)); total >= s.segment/4 && s.appliedBytes.CompareAndSwap(total, 0) {
		s.wake()
	}
}

// status is the budget as the node reports it.
func (s *storage) status() *clusterapi.StorageStatus {
	s.mu.Lock()
	sp := s.measure()
	s.mu.Unlock()
	if sp.err != nil {
		return nil
	}
	return &clusterapi.StorageStatus{Full: s.update(sp), FreeBytes: sp.free, CapacityBytes: sp.capacity, ReserveBytes: uint64(sp.reserve)}
}

// watchStorage keeps the full state current, and when the room runs low
// takes a snapshot and compacts the log with no trailing entries, so that
// the log the snapshot covers is given back. It runs every SnapshotCheck,
// at once when a write finds the room low, and after every quarter
// segment of entries applied.
func (n *Node) watchStorage() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.SnapshotCheck)
	defer t.Stop()
	s := n.storage
	var retryAt time.Time
	backoff := time.Second
	wasFull := false
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		case <-s.low:
		}
		s.mu.Lock()
		sp := s.measure()
		s.mu.Unlock()
		if sp.err != nil {
			continue
		}
		full := s.update(sp)
		if full != wasFull {
			if full {
				n.cfg.Logger.Warn("storage full: refusing PUTs (507) until space is freed; reads and DELETEs are served", "free-bytes", sp.free, "capacity-bytes", sp.capacity, "reserve-bytes", sp.reserve)
			} else {
				n.cfg.Logger.Info("storage: PUTs accepted again", "free-bytes", sp.free, "capacity-bytes", sp.capacity, "reserve-bytes", sp.reserve)
			}
			wasFull = full
		}
		if sp.room >= s.segment {
			// The spare that let raft record a term on a full volume
			// is made again while there is room for it, not only at the
			// next start: the volume may fill again before then.
			n.log.EnsureSpare()
		}
		// Compaction frees only whole segments, the last one never: a
		// log of less than two segments has nothing to give back.
		if sp.room >= 2*s.segment || n.log.Size() < 2*s.segment || time.Now().Before(retryAt) {
			continue
		}
		var err error
		if need := s.store.SnapshotBytes() + sp.floor/4; int64(sp.free)+s.writing.Load() < need {
			// Only when something the budget does not know of took the
			// space (another process, an older kvnode): the snapshot would
			// fail at the floor, after writing all it could.
			err = fmt.Errorf("%d bytes free, and a snapshot needs %d", sp.free, need)
		} else {
			err = n.compactNow()
		}
		if err != nil {
			n.cfg.Logger.Warn("snapshot to free space failed", "error", err, "free-bytes", sp.free, "retry-in", backoff.String())
			retryAt = time.Now().Add(backoff)
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		n.cfg.Logger.Info("snapshot taken and log compacted to free space", "free-bytes-before", sp.free, "log-bytes", n.log.Size())
	}
}

// compactNow takes a snapshot and compacts the log up to it, keeping no
// trailing entries: a follower that lags gets a snapshot instead.
func (n *Node) compactNow() error {
	rc := n.raft.ReloadableConfig()
	keep := rc.TrailingLogs
	rc.TrailingLogs = 0
	if err := n.raft.ReloadConfig(rc); err != nil {
		return err
	}
	defer func() {
		rc := n.raft.ReloadableConfig()
		rc.TrailingLogs = keep
		_ = n.raft.ReloadConfig(rc) // the same values it accepted before
	}()
	err := n.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// budgetSnapshots is the snapshot store with the budget's last word: a
// snapshot that would write into the last quarter of the floor fails (and
// is removed) instead, since raft panics when it cannot record a term. It
// counts what snapshots in progress have written (storage.writing).
type budgetSnapshots struct {
	raft.SnapshotStore
	dir     string
	storage *storage
	mu      sync.Mutex
	open    int // sinks not yet closed or cancelled
}

func (b *budgetSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	b.mu.Lock()
	b.open++
	b.mu.Unlock()
	sink, err := b.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		b.closed()
		return nil, err
	}
	return &budgetSink{SnapshotSink: sink, b: b}, nil
}

// closed counts a sink out; the last one out removes what failed
// snapshots left: the file store keeps a temporary directory whose
// metadata could not be written, and never looks at it again.
func (b *budgetSnapshots) closed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open--
	if b.open == 0 {
		removeTemporarySnapshots(b.dir)
	}
}

// removeTemporarySnapshots removes snapshots that were never completed.
// Only while no snapshot is being written: the node holds the data
// directory's lock, so nobody else writes there.
func removeTemporarySnapshots(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasSuffix(e.Name(), ".tmp") {
			_ = os.RemoveAll(filepath.Join(dir, e.Name())) // best effort: space, not correctness
		}
	}
}

type budgetSink struct {
	raft.SnapshotSink
	b         *budgetSnapshots
	written   int64
	unchecked int64
	done      bool
}

func (s *budgetSink) Write(p []byte) (int, error) {
	st := s.b.storage
	if s.unchecked += int64(len(p)); s.unchecked >= checkEvery {
		free, capacity, err := volumeSpace(st.dir)
		if err == nil && int64(free) < storageFloor(capacity)/4+s.unchecked {
			return 0, fmt.Errorf("%w: %d bytes free; a snapshot may not take the last %d", core.ErrNoSpace, free, storageFloor(capacity)/4)
		}
		s.unchecked = 0
	}
	n, err := s.SnapshotSink.Write(p)
	s.written += int64(n)
	st.writing.Add(int64(n))
	return n, err
}

// end stops counting what the sink wrote, before the inner sink completes
// or removes it: completing removes the snapshot before it, and space
// freed while the new one still counted as written would be counted
// twice. Until the inner sink returns, the room is under-counted, which
// refuses a PUT too many, never one too few.
func (s *budgetSink) end() bool {
	if s.done {
		return false
	}
	s.done = true
	s.b.storage.writing.Add(-s.written)
	return true
}

// Close completes the snapshot; the file store then removes the one
// before it.
func (s *budgetSink) Close() error {
	if !s.end() {
		return s.SnapshotSink.Close()
	}
	defer s.b.closed()
	return s.SnapshotSink.Close()
}

func (s *budgetSink) Cancel() error {
	if !s.end() {
		return s.SnapshotSink.Cancel()
	}
	defer s.b.closed()
	return s.SnapshotSink.Cancel()
}
