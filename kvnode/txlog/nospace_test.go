package txlog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
