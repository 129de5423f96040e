package txlog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/test/tmpfs"
)

func bigEntry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 8<<10)}
}

// On a volume that fills up, an append is refused with ErrNoSpace and
// nothing of it is written; the log stays healthy, appends again once the
// volume grows, and a compaction that has no room for the stable file's
// new copy is refused the same way. Before, the first segment that could
// not be created failed the log for good.
func TestFullVolumeRefusesAppendsWithoutFailing(t *testing.T) {
	vol := tmpfs.Mount(t, 4<<20)
	dir := filepath.Join(vol, "log")
	l, err := Open(dir, Options{SegmentBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var last uint64
	for ; ; last++ {
		err := l.StoreLogs([]*raft.Log{bigEntry(last + 1), bigEntry(last + 2)})
		if err == nil {
			last++
			continue
		}
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("append on a full volume after %d entries: %v, want ErrNoSpace", last, err)
		}
		break
	}
	if err := l.Err(); err != nil {
		t.Fatalf("the log failed for good on a full volume: %v", err)
	}
	if got, _ := l.LastIndex(); got != last {
		t.Fatalf("last index %d after a refused append, want %d", got, last)
	}
	free, size := tmpfs.Free(t, vol)
	t.Logf("%d entries; %d of %d bytes free", last, free, size)

	// Nothing of the refused batch is on disk: Open finds the entries
	// acknowledged, and only those.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(dir, Options{SegmentBytes: 256 << 10}); err != nil {
		t.Fatalf("open on a full volume: %v", err)
	}
	if got, _ := l.LastIndex(); got != last {
		t.Fatalf("after reopening, last index %d, want %d", got, last)
	}

	// Take what little is left: the stable file's spare makes room for
	// one new copy of it (raft must be able to record a term); after
	// that, a compaction is refused and changes nothing.
	fillUp := func(name string) string {
		t.Helper()
		f, err := os.Create(filepath.Join(vol, name))
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := f.Write(make([]byte, 4096)); err != nil {
				break
			}
		}
		_ = f.Close()
		return f.Name()
	}
	fillers := []string{fillUp("filler1")}
	if err := l.DeleteRange(1, 10); err != nil {
		t.Fatalf("compaction with only the spare's room: %v", err)
	}
	fillers = append(fillers, fillUp("filler2"))
	if err := l.DeleteRange(11, 20); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("compaction with no room at all: %v, want ErrNoSpace", err)
	}
	if first, _ := l.FirstIndex(); first != 11 || l.Err() != nil {
		t.Fatalf("after a refused compaction: first index %d, error %v", first, l.Err())
	}
	for _, f := range fillers {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.DeleteRange(11, 20); err != nil {
		t.Fatal(err)
	}

	tmpfs.Resize(t, vol, 8<<20)
	if err := l.StoreLogs([]*raft.Log{bigEntry(last + 1), bigEntry(last + 2)}); err != nil {
		t.Fatalf("append after the volume grew: %v", err)
	}
	var e raft.Log
	for i := uint64(21); i <= last+2; i++ {
		if err := l.GetLog(i, &e); err != nil || !bytes.Equal(e.Data, bigEntry(i).Data) {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}

// fillTo takes all but keep bytes of vol's free space in one file, as
// something else on the volume would, and returns the file's path.
func fillTo(t *testing.T, vol string, keep int64) string {
	t.Helper()
	free, _ := tmpfs.Free(t, vol)
	f, err := os.Create(filepath.Join(vol, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, int64(free)-keep); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// A refused append gives back whatever its allocation took: ext4 and XFS
// keep what a fallocate that ran out of space allocated, and grow the file
// by it, which left the volume with nothing free for raft's next term (it
// panics), and after the restart no room for the stable file's spare, so
// that the node panicked again at every election. tmpfs gives it back by
// itself.
func TestRefusedAppendGivesBackWhatItAllocated(t *testing.T) {
	for _, fs := range []struct {
		name  string
		mount func(testing.TB, int64) string
	}{{"tmpfs", tmpfs.Mount}, {"ext4", tmpfs.Ext4}} {
		t.Run(fs.name, func(t *testing.T) {
			vol := fs.mount(t, 32<<20)
			dir := filepath.Join(vol, "log")
			opts := Options{SegmentBytes: 256 << 10}
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			for i := uint64(1); i <= 4; i++ {
				if err := l.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
			fillTo(t, vol, 1<<20)
			free, _ := tmpfs.Free(t, vol)
			before := int64(free) + l.Unused()
			big := func(i uint64) *raft.Log {
				return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{1}, 1<<20)}
			}
			batch := []*raft.Log{big(5), big(6), big(7), big(8)}
			for try := 0; try < 3; try++ {
				// The leader sends the batch again and again.
				if err := l.StoreLogs(batch); !errors.Is(err, ErrNoSpace) {
					t.Fatalf("a 4 MiB append with 1 MiB free: %v, want ErrNoSpace", err)
				}
				// What the disk budget counts as space: the batch may have
				// sealed the segment and started the next one.
				free, _ := tmpfs.Free(t, vol)
				if raw := int64(free) + l.Unused(); raw+64<<10 < before {
					t.Fatalf("after a refused append %d bytes are free and %d allocated to the log and unused; %d before", free, l.Unused(), before)
				}
			}
			for term := uint64(2); term < 5; term++ {
				if err := l.SetUint64([]byte("CurrentTerm"), term); err != nil {
					t.Fatalf("recording term %d after refused appends: %v", term, err)
				}
			}
			if err := l.StoreLog(&raft.Log{Index: 5, Term: 4, Type: raft.LogCommand, Data: []byte("y")}); err != nil {
				t.Fatalf("a small append after refused ones: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(filepath.Join(dir, "stable.spare")); err != nil || fi.Size() != spareBytes {
				t.Fatalf("the spare after reopening: %v, %v", fi, err)
			}
		})
	}
}

// The same on the simulated disk, where the fallocate is let through and
// runs out of space part way: the log cuts the segment back to its size
// before the call, and the cut is on disk before the append is refused, so
// that a crash does not bring the space back into the file.
func TestRefusedAllocationIsCutBack(t *testing.T) {
	fsys := newSimFS()
	l := openSim(t, fsys, Options{SegmentBytes: 64 << 10})
	appendRange(t, l, 1, 10)
	// A batch larger than a segment gets a new one to itself, allocated
	// to the segment size first and then to the batch's.
	size := int64(recordsV2 + 64<<10)
	fsys.allocCap = size + 8<<10
	huge := &raft.Log{Index: 11, Term: 1, Type: raft.LogCommand, Data: make([]byte, 100<<10)}
	path := filepath.Join(simDir, segmentName(11))
	if err := l.StoreLog(huge); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("append past the space: %v, want ErrNoSpace", err)
	}
	ino := fsys.names[path]
	if got, durable := int64(len(ino.data)), int64(len(ino.durable)); got != size || durable != size {
		t.Fatalf("after a refused allocation the segment has %d bytes (%d durable), %d before", got, durable, size)
	}
	fsys.allocCap = 0
	appendRange(t, l, 11, 12)
}

func spareSize(fsys *simFS) int {
	ino := fsys.names[filepath.Join(simDir, "stable.spare")]
	if ino == nil {
		return -1
	}
	return len(ino.data)
}

// The stable file's spare is made whole again: one that a crash left
// short (created, its allocation lost) is not taken for one, and one that
// a full volume used up comes back once there is room, not only at the
// next Open. Before, the first full volume used the spare up for good.
func TestSpareIsMadeWholeAgain(t *testing.T) {
	fsys := newSimFS()
	l := openSim(t, fsys, Options{SegmentBytes: 64 << 10})
	if got := spareSize(fsys); got != spareBytes {
		t.Fatalf("spare of %d bytes after Open, want %d", got, spareBytes)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.names[filepath.Join(simDir, "stable.spare")].truncateForTest(0); err != nil {
		t.Fatal(err)
	}
	l = openSim(t, fsys, Options{SegmentBytes: 64 << 10})
	defer l.Close()
	if got := spareSize(fsys); got != spareBytes {
		t.Fatalf("a spare left empty by a crash is %d bytes after Open, want %d", got, spareBytes)
	}

	vol := tmpfs.Mount(t, 4<<20)
	dir := filepath.Join(vol, "log")
	l2, err := Open(dir, Options{SegmentBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	filler := fillTo(t, vol, 0)
	if err := l2.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatalf("a term on a full volume, with the spare: %v", err)
	}
	spare := filepath.Join(dir, "stable.spare")
	if _, err := os.Stat(spare); !os.IsNotExist(err) {
		t.Fatalf("the spare after it made room: %v", err)
	}
	l2.EnsureSpare() // no room: nothing
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	l2.EnsureSpare()
	if fi, err := os.Stat(spare); err != nil || fi.Size() != spareBytes {
		t.Fatalf("the spare once there is room again: %v, %v", fi, err)
	}
}

// On a file system that cannot preallocate, the space is taken by the
// write itself: a write that runs out of it is cut back to where the
// batch began, and the append is refused with ErrNoSpace, not failed for
// good. Before, it failed the log, and the node, for good.
func TestWriteThatRunsOutOfSpaceIsRefused(t *testing.T) {
	fsys := newSimFS()
	fsys.noAllocate = true
	l := openSim(t, fsys, Options{SegmentBytes: 1 << 20})
	appendRange(t, l, 1, 10)
	path := filepath.Join(simDir, segmentName(1))
	size := int64(len(fsys.names[path].data))
	fsys.writeCap = size + 1000
	big := &raft.Log{Index: 11, Term: 1, Type: raft.LogCommand, Data: make([]byte, 8<<10)}
	if err := l.StoreLog(big); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("a write past the space: %v, want ErrNoSpace", err)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("the log failed for good: %v", err)
	}
	if got := int64(len(fsys.names[path].data)); got != size {
		t.Fatalf("after a refused write the segment has %d bytes, %d before", got, size)
	}
	fsys.writeCap = 0
	if err := l.StoreLog(big); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openSim(t, fsys, Options{SegmentBytes: 1 << 20})
	defer l.Close()
	if last, _ := l.LastIndex(); last != 11 {
		t.Fatalf("last index %d after reopening, want 11", last)
	}
}

// raft's log cache keeps only the message of the store's error (%q): the
// node tells a refused append by IsNoSpace, which must see through it.
func TestNoSpaceIsToldThroughRaftsLogCache(t *testing.T) {
	fsys := newSimFS()
	l := openSim(t, fsys, Options{SegmentBytes: 64 << 10})
	defer l.Close()
	cache, err := raft.NewLogCache(16, l)
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, l, 1, 10)
	fsys.allocCap = 1
	err = cache.StoreLogs([]*raft.Log{{Index: 11, Term: 1, Type: raft.LogCommand, Data: make([]byte, 100<<10)}})
	if err == nil || errors.Is(err, ErrNoSpace) {
		t.Fatalf("through the cache: %v; the test needs an error that lost its chain", err)
	}
	if !IsNoSpace(err) {
		t.Fatalf("IsNoSpace(%v) = false", err)
	}
	if IsNoSpace(errors.New("txlog: closed")) || IsNoSpace(nil) {
		t.Fatal("IsNoSpace of other errors")
	}
}
