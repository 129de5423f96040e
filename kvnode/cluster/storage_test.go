package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
	"github.com/kvstore-operator/kvstore-operator/test/tmpfs"
)

func TestFitSegment(t *testing.T) {
	for _, tc := range []struct {
		capacity uint64
		want     int64
	}{
		{16 << 20, 1 << 20},  // the least
		{96 << 20, 3 << 20},  // a 32nd
		{150e6, 4653056},     // the volume: a 32nd, in 64 KiB steps
		{10 << 30, 64 << 20}, // the most
	} {
		if got := fitSegment(tc.capacity); got != tc.want {
			t.Errorf("fitSegment(%d) = %d, want %d", tc.capacity, got, tc.want)
		}
	}
}

// On a volume that something else filled, the node refuses PUTs, its own
// and those a follower forwards (507, which the follower turns back into
// core.ErrNoSpace), before they enter the log; DELETEs go on; the status
// says so; and once the space is back, PUTs are taken again with no
// restart.
func TestFullVolumeRefusesPutsAndKeepsDeletes(t *testing.T) {
	vol := tmpfs.Mount(t, 48<<20)
	n, svc := openNode(t, filepath.Join(vol, "data"), true)
	waitLeader(t, svc)
	ctx := context.Background()
	if err := svc.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// Leave free what a DELETE may use, and a PUT may not.
	s := n.storage
	s.mu.Lock()
	sp := s.measure()
	s.mu.Unlock()
	keep := s.segment + 5*sp.floor/8 - n.log.Unused()
	filler, err := os.Create(filepath.Join(vol, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Fallocate(int(filler.Fd()), 0, 0, int64(sp.free)-keep)
	_ = filler.Close() // allocated, and removed below
	if err != nil {
		t.Fatal(err)
	}

	if err := svc.Put(ctx, "b", []byte("2")); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("PUT on a full volume: %v, want ErrNoSpace", err)
	}
	if err := svc.Delete(ctx, "a"); err != nil {
		t.Fatalf("DELETE on a full volume: %v", err)
	}
	if _, err := svc.Get(ctx, "b", core.Linearizable); !errors.Is(err, core.ErrNoSuchKey) {
		t.Fatalf("the refused PUT was applied: %v", err)
	}
	if st := n.Status().Storage; st == nil || !st.Full || st.ReserveBytes == 0 {
		t.Fatalf("status on a full volume: %+v", st)
	}
	if err := n.Live(); err != nil {
		t.Fatalf("a full volume made the node not live: %v", err)
	}

	allow := func(*http.Request) error { return nil }
	srv := httptest.NewServer(Handler(n, Authorizers{Admin: allow, Peer: allow}))
	defer srv.Close()
	cmd, _ := core.Event{Type: core.EventPut, Key: "c", Value: []byte("3")}.MarshalBinary()
	follower := &Node{client: srv.Client(), cfg: Config{NodeID: "follower"}}
	if err := follower.forwardPropose(ctx, srv.URL, cmd); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("a PUT forwarded to a full leader: %v, want ErrNoSpace", err)
	}

	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := svc.Put(ctx, "b", []byte("2"))
		if err == nil {
			break
		}
		if !errors.Is(err, core.ErrNoSpace) || time.Now().After(deadline) {
			t.Fatalf("PUT once the space is back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := follower.forwardPropose(ctx, srv.URL, cmd); err != nil {
		t.Fatalf("a forwarded PUT once the space is back: %v", err)
	}
	if st := n.Status().Storage; st == nil || st.Full {
		t.Fatalf("status once the space is back: %+v", st)
	}
}

// reapingSnapshots is a snapshot store whose sinks record, when they
// complete, what the budget counts as written by snapshots in progress:
// the file store removes the snapshot before at that point.
type reapingSnapshots struct {
	raft.SnapshotStore
	st     *storage
	atReap []int64
}

func (r *reapingSnapshots) Create(raft.SnapshotVersion, uint64, uint64, raft.Configuration, uint64, raft.Transport) (raft.SnapshotSink, error) {
	return &reapingSink{r: r}, nil
}

type reapingSink struct {
	raft.SnapshotSink
	r *reapingSnapshots
}

func (s *reapingSink) Write(p []byte) (int, error) { return len(p), nil }

func (s *reapingSink) Close() error {
	s.r.atReap = append(s.r.atReap, s.r.st.writing.Load())
	return nil
}

// A completed snapshot no longer counts as being written by the time the
// one before it is removed: until then the budget counted the new one
// twice (in the free space, and as written), and the old one's space,
// once freed, on top: the room was over-counted by up to a snapshot.
func TestCompletedSnapshotIsNotCountedWhileTheOldOneIsRemoved(t *testing.T) {
	st := &storage{}
	r := &reapingSnapshots{st: st}
	b := &budgetSnapshots{SnapshotStore: r, dir: t.TempDir(), storage: st}
	sink, err := b.Create(raft.SnapshotVersionMax, 10, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if got := st.writing.Load(); got != 4096 {
		t.Fatalf("while the snapshot is written, %d bytes count as written, want 4096", got)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.atReap) != 1 || r.atReap[0] != 0 {
		t.Fatalf("while the old snapshot was removed, %v bytes counted as being written, want 0", r.atReap)
	}
}

// A snapshot's write that lands between the measurement of the free space
// and the read of what snapshots have written is not counted as room: the
// free space does not show it yet, and counting it as written lent the
// room up to a value's size each time.
func TestWriteDuringAMeasurementIsNotCountedAsRoom(t *testing.T) {
	log, err := txlog.Open(filepath.Join(t.TempDir(), "log"), txlog.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s := newStorage(t.TempDir(), log, core.NewStore())
	const free, capacity = 1 << 30, 4 << 30
	s.writing.Store(1 << 20)
	s.statfs = func(string) (uint64, uint64, error) { return free, capacity, nil }
	want := s.measure().room
	s.statfs = func(string) (uint64, uint64, error) {
		s.writing.Add(1 << 20) // not in free yet
		return free, capacity, nil
	}
	if got := s.measure().room; got > want {
		t.Fatalf("room %d with a write landing during the measurement, %d without", got, want)
	}
}

// budgetOn is a budget whose volume the test sets: free bytes of a 1 GiB
// volume (a 32 MiB floor), with a store holding snapshot bytes of data.
func budgetOn(t *testing.T, snapshot int) (*storage, *int64) {
	t.Helper()
	log, err := txlog.Open(filepath.Join(t.TempDir(), "log"), txlog.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	st := core.NewStore()
	st.Apply(1, core.Event{Type: core.EventPut, Key: "k", Value: make([]byte, snapshot)})
	s := newStorage(t.TempDir(), log, st)
	free := new(int64)
	s.statfs = func(string) (uint64, uint64, error) { return uint64(*free), 1 << 30, nil }
	return s, free
}

func drain(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// DELETEs may not take the next snapshot's room, nor, all at once, more
// than there is: before, a DELETE was admitted while free space less a
// segment kept half the floor, whatever the snapshot needed and however
// many DELETEs were in flight, and once the free space was below the
// snapshot's size the node never snapshotted again, so its log, and the
// DELETEs in it, were never given back.
func TestDeletesKeepTheSnapshotsRoom(t *testing.T) {
	s, free := budgetOn(t, 8<<20)
	floor := storageFloor(1 << 30)
	need := s.store.SnapshotBytes() + s.segment + floor/2
	drain(s.low)

	*free = need - 1 // a segment and half the floor, not the snapshot
	if _, err := s.admitDelete(100, 0); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("a DELETE that takes the snapshot's room: %v, want ErrNoSpace", err)
	}
	if !drain(s.low) {
		t.Error("a refused DELETE did not wake the watcher")
	}

	*free = need + 10<<10
	var admitted []*admission
	for range 2 {
		a, err := s.admitDelete(4<<10, 0)
		if err != nil {
			t.Fatalf("a DELETE with room: %v", err)
		}
		admitted = append(admitted, a)
	}
	if _, err := s.admitDelete(4<<10, 0); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("a third 4 KiB DELETE in flight with 10 KiB of room: %v, want ErrNoSpace", err)
	}
	admitted[0].done()
	a, err := s.admitDelete(4<<10, 0)
	if err != nil {
		t.Fatalf("a DELETE once another finished: %v", err)
	}
	a.done()
	admitted[1].done()

	// What a snapshot in progress has written is already out of the free
	// space, and comes out of the snapshot's room, not the DELETEs'.
	s.writing.Store(4 << 20)
	*free = need + 10<<10 - 4<<20
	a, err = s.admitDelete(4<<10, 0)
	if err != nil {
		t.Fatalf("a DELETE while a snapshot is written: %v", err)
	}
	a.done()

	// A DELETE of a key held frees at least what it writes: it needs only
	// a segment and half the floor, so a full node can always be emptied.
	s.writing.Store(0)
	*free = need - s.store.SnapshotBytes() + 10<<10
	if _, err := s.admitDelete(4<<10, 0); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("a DELETE freeing nothing, without the snapshot's room: %v, want ErrNoSpace", err)
	}
	a, err = s.admitDelete(4<<10, 8<<10)
	if err != nil {
		t.Fatalf("a DELETE of a held 8 KiB pair, with a segment and half the floor: %v", err)
	}
	a.done()
}

// futureAt is a raft future that resolves when its channel is closed.
type futureAt chan struct{}

func (f futureAt) Error() error  { <-f; return nil }
func (f futureAt) Index() uint64 { return 0 }
func (f futureAt) Response() any { return nil }

// A PUT that its request gave up on stays counted until raft settles its
// entry: before, a request that timed out gave back its share of the
// room while the entry was still on its way into the log and the store.
func TestAPutIsCountedUntilItsEntrySettles(t *testing.T) {
	s, free := budgetOn(t, 1<<20)
	*free = 512 << 20
	a, err := s.admitPut(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	f := make(futureAt)
	a.holdUntil(f)
	a.done() // the request timed out
	s.mu.Lock()
	pending := s.pending
	s.mu.Unlock()
	if pending == 0 {
		t.Fatal("a PUT whose entry has not settled is no longer counted")
	}
	close(f)
	testutil.Eventually(t, 5*time.Second, "the PUT no longer counted", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.pending != 0 {
			return fmt.Errorf("%d bytes pending", s.pending)
		}
		return nil
	})
}

// A follower's log grows with what it applies, not with PUTs it admits:
// its watcher is woken by what it applies, so that it compacts too.
func TestAppliedEntriesWakeTheWatcher(t *testing.T) {
	s, _ := budgetOn(t, 1)
	drain(s.low)
	f := &fsm{store: s.store, onApplied: s.applied}
	for i := uint64(2); !drain(s.low); i++ {
		if i > 2+uint64(s.segment/(64<<10)) {
			t.Fatalf("%d bytes applied and the watcher was not woken", (i-2)*(64<<10))
		}
		cmd, _ := core.Event{Type: core.EventPut, Key: "k", Value: make([]byte, 64<<10)}.MarshalBinary()
		f.ApplyBatch([]*raft.Log{{Index: i, Type: raft.LogCommand, Data: cmd}})
	}
}

// The stable file's spare, used up when a node restarted on a volume
// something else filled, is made again by the watcher once the space is
// back: before, only the next restart made it, and the node went on with
// none for the next full volume.
func TestWatcherMakesTheSpareAgain(t *testing.T) {
	vol := tmpfs.Mount(t, 48<<20)
	dir := filepath.Join(vol, "data")
	n, svc := openNode(t, dir, true)
	waitLeader(t, svc)
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	free, _ := tmpfs.Free(t, vol)
	filler, err := os.Create(filepath.Join(vol, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Fallocate(int(filler.Fd()), 0, 0, int64(free))
	_ = filler.Close() // allocated, and removed below
	if err != nil {
		t.Fatal(err)
	}
	_, svc = openNode(t, dir, false)
	waitLeader(t, svc) // a new term, recorded in the spare's room
	spare := filepath.Join(dir, "log", "stable.spare")
	if _, err := os.Stat(spare); !os.IsNotExist(err) {
		t.Fatalf("the spare after a term was recorded on a full volume: %v", err)
	}
	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the spare made again", func() error {
		fi, err := os.Stat(spare)
		if err != nil {
			return err
		}
		if fi.Size() < 64<<10 {
			return fmt.Errorf("%d bytes", fi.Size())
		}
		return nil
	})
}
