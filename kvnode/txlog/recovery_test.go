package txlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTornTailIsCutOff(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 20)
	end := l.segs[0].end
	l.Close()

	// A crash in the middle of writing record 21: only part of it reached the disk.
	rec := appendRecord(nil, entry(21))
	f, err := os.OpenFile(segmentFiles(t, dir)[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(rec[:len(rec)/2], end); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l = openFile(t, dir, Options{})
	assertRange(t, l, 1, 20)
	appendRange(t, l, 21, 25)
	l.Close()
	assertRange(t, openFile(t, dir, Options{}), 1, 25)
}

func TestTornHeaderOfANewSegmentIsDropped(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 5)
	l.Close()
	// The crash came after creating the next segment file, before its header was written.
	if err := os.WriteFile(filepath.Join(dir, segmentName(6)), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	assertRange(t, openFile(t, dir, Options{}), 1, 5)
}

func TestCorruptionBeforeTheTailRefusesToOpen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segment func(files []string) string
	}{
		{"in a sealed segment", func(files []string) string { return files[0] }},
		{"in the last segment, valid records after it", func(files []string) string { return files[len(files)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openFile(t, dir, Options{SegmentBytes: 4096})
			appendRange(t, l, 1, 200)
			l.Close()
			files := segmentFiles(t, dir)
			if len(files) < 2 {
				t.Fatalf("want several segments, got %d", len(files))
			}
			path := tc.segment(files)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Flip a bit inside the second record's body.
			off := recordsV2 + len(appendRecord(nil, entry(1))) + recordHeader + 3
			b[off] ^= 0x40
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(dir, Options{SegmentBytes: 4096})
			if err == nil {
				t.Fatal("Open succeeded on a corrupt log")
			}
			for _, want := range []string{filepath.Base(path), "offset"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

func TestMissingSegmentRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{SegmentBytes: 4096})
	appendRange(t, l, 1, 200)
	l.Close()
	files := segmentFiles(t, dir)
	if err := os.Remove(files[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{SegmentBytes: 4096}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open = %v, want a missing-segment error", err)
	}
}

func TestCompactionRemovesFiles(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{SegmentBytes: 4096})
	appendRange(t, l, 1, 1000)
	before, size := len(segmentFiles(t, dir)), l.Size()
	if err := l.DeleteRange(1, 990); err != nil {
		t.Fatal(err)
	}
	after := len(segmentFiles(t, dir))
	if after >= before || after > 2 {
		t.Fatalf("segments: %d before compaction, %d after; want at most 2", before, after)
	}
	if l.Size() >= size/10 {
		t.Fatalf("size %d after compaction, %d before", l.Size(), size)
	}
}

func TestNonContiguousAppendIsRejected(t *testing.T) {
	l := openFile(t, t.TempDir(), Options{})
	appendRange(t, l, 1, 3)
	if err := l.StoreLog(entry(5)); err == nil {
		t.Fatal("gap accepted")
	}
	if err := l.StoreLog(entry(3)); err == nil {
		t.Fatal("overlap accepted")
	}
	assertRange(t, l, 1, 3)
}

type countingObserver struct{ appends, syncs atomic.Int64 }

func (c *countingObserver) ObserveAppend(int, time.Duration) { c.appends.Add(1) }
func (c *countingObserver) ObserveSync(time.Duration)        { c.syncs.Add(1) }

// Writers that arrive while a sync runs share the next one.
func TestGroupCommitSharesSyncs(t *testing.T) {
	obs := &countingObserver{}
	l := openFile(t, t.TempDir(), Options{Observer: obs})
	const writers, each = 16, 50
	var order sync.Mutex
	next := uint64(1)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				order.Lock() // indexes must arrive in order; durability is awaited outside
				c, err := l.Append([]*raft.Log{entry(next)})
				next++
				order.Unlock()
				if err == nil {
					err = c.Wait()
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	assertRange(t, l, 1, writers*each)
	if s := obs.syncs.Load(); s >= writers*each/2 {
		t.Fatalf("%d fdatasyncs for %d appends: group commit is not grouping", s, writers*each)
	}
	t.Logf("%d appends, %d fdatasyncs", writers*each, obs.syncs.Load())
}

func TestFailedLogRefusesWrites(t *testing.T) {
	l := openFile(t, t.TempDir(), Options{})
	appendRange(t, l, 1, 3)
	l.mu.Lock()
	_ = l.fail(fmt.Errorf("simulated EIO"))
	l.mu.Unlock()
	if err := l.StoreLog(entry(4)); err == nil {
		t.Fatal("append accepted after a failure")
	}
	if l.Err() == nil {
		t.Fatal("Err() is nil after a failure")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, entry(1)))
	f.Add(appendRecord(nil, &raft.Log{Index: 7, Type: raft.LogNoop}))
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		n, err := decodeRecord(b, &l)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		// What decodes must re-encode to the same bytes.
		if again := appendRecord(nil, &l); !bytes.Equal(again, b[:n]) {
			t.Fatalf("round trip differs:\n% x\n% x", again, b[:n])
		}
	})
}

// A record longer than the reader accepts would be written, acknowledged
// and then refuse every later open ("corrupt record"): the writer must
// refuse it instead, write nothing of its batch, and stay usable.
func TestOversizedRecordIsRefusedBeforeWriting(t *testing.T) {
	for _, e := range []*raft.Log{entry(7), {Index: 1}, {Index: 2, Data: make([]byte, 300)}} {
		if got, want := recordBodyBytes(e), len(appendRecord(nil, e))-recordHeader; got != uint64(want) {
			t.Fatalf("recordBodyBytes = %d, appendRecord wrote %d", got, want)
		}
	}
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 3)
	huge := entry(5)
	huge.Data = make([]byte, MaxRecordBytes)
	err := l.StoreLogs([]*raft.Log{entry(4), huge})
	if !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("oversized append = %v, want ErrRecordTooLarge", err)
	}
	if l.Err() != nil {
		t.Fatalf("the refusal made the log fail: %v", l.Err())
	}
	assertRange(t, l, 1, 3)
	appendRange(t, l, 4, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	assertRange(t, openFile(t, dir, Options{}), 1, 5)
}

// A log written by a newer format (a downgrade) is refused whole, naming
// the file and both versions, and nothing in it is changed: neither taken
// for corruption nor cut as a torn tail.
func TestNewerFormatIsRefusedNotRepaired(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 20)
	l.Close()
	seg := segmentFiles(t, dir)[0]
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	copy(data, "KVTXLOG3")
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), seg) || !strings.Contains(err.Error(), "format version 3") || !strings.Contains(err.Error(), "up to 2") {
		t.Fatalf("Open = %v, want a refusal naming %s and the versions", err, seg)
	}
	after, err := os.ReadFile(seg)
	if err != nil || !bytes.Equal(after, data) {
		t.Fatalf("the newer segment was changed (%v)", err)
	}
}
