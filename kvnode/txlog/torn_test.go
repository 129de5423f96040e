package txlog

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// tornOpts leave room for the whole test in one segment, so that the
// unsynced region is the tail of the last segment.
var tornOpts = Options{SegmentBytes: 16 * pageBytes}

// tornLog is a log with acknowledged entries 1..acked followed by
// unacknowledged batches (written, never waited for) up to entry last, on a
// disk whose power is about to go. pages are the pages of the segment
// written since its last sync: the unsynced region.
type tornLog struct {
	fs          *simFS
	path        string
	acked, last uint64
	pages       []int64
}

func newTornLog(t testing.TB, acked uint64, batches ...int) *tornLog {
	t.Helper()
	fsys := newSimFS()
	l := openSim(t, fsys, tornOpts)
	for i := uint64(1); i <= acked; i += 3 {
		if err := l.StoreLogs(batchT(i, min(i+2, acked), 1)); err != nil {
			t.Fatal(err)
		}
	}
	last := acked
	for _, n := range batches {
		if _, err := l.Append(batchT(last+1, last+uint64(n), 1)); err != nil {
			t.Fatal(err)
		}
		last += uint64(n)
	}
	if len(l.segs) != 1 {
		t.Fatalf("want one segment, got %d", len(l.segs))
	}
	path := l.segs[0].path
	return &tornLog{fs: fsys, path: path, acked: acked, last: last, pages: fsys.unsyncedPages(path)}
}

// cut loses power, tearing page pages[i] of the segment as tears[i], and
// checks that the log opens with every acknowledged entry, holds nothing
// but entries written, in order, and takes appends again.
func (tl *tornLog) cut(tears []tear, seed int64) error {
	img := tl.fs.clone()
	byPage := map[int64]tear{}
	for i, p := range tl.pages {
		byPage[p] = tears[i]
	}
	img.powerCut(cutPolicy{seed: seed, page: func(path string, p int64) tear {
		if path == tl.path {
			return byPage[p]
		}
		return stale
	}})
	l, err := open(img, simDir, tornOpts)
	if err != nil {
		return fmt.Errorf("open refused: %w", err)
	}
	defer l.Close()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if tl.acked > 0 && (first != 1 || last < tl.acked) || last > tl.last {
		return fmt.Errorf("log is %d..%d; entries 1..%d were acknowledged, 1..%d written", first, last, tl.acked, tl.last)
	}
	for i := first; i <= last && last > 0; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			return fmt.Errorf("GetLog(%d): %w", i, err)
		}
		if !sameEntry(&e, entryT(i, 1)) {
			return fmt.Errorf("entry %d is not what was written", i)
		}
	}
	if err := l.StoreLogs([]*raft.Log{entryT(last+1, 2)}); err != nil {
		return fmt.Errorf("append after recovery: %w", err)
	}
	return nil
}

// The tears of one page, and every combination of them over n pages.
var allTears = []tear{landed, zeroed, stale, garbage}

func tearCombos(n int) [][]tear {
	combos := [][]tear{{}}
	for i := 0; i < n; i++ {
		var next [][]tear
		for _, c := range combos {
			for _, t := range allTears {
				next = append(next, append(append([]tear(nil), c...), t))
			}
		}
		combos = next
	}
	return combos
}

// TestTornLastBatchAtEveryPageBoundary tears the unacknowledged tail of the
// log (several records over several pages, some of them in the page that
// also holds the last acknowledged record) at every page boundary, in every
// way: each page landed, zeroed, stale or garbage, all combinations. The
// log must open every time with every acknowledged entry: nothing in the
// torn region was acknowledged, so nothing there may make Open refuse.
func TestTornLastBatchAtEveryPageBoundary(t *testing.T) {
	for _, tc := range []struct {
		acked   uint64
		batches []int
	}{
		{0, []int{50}},      // a fresh log's first batch
		{1, []int{45}},      // the tail starts mid page
		{14, []int{25, 25}}, // two unsynced batches
		{19, []int{3, 3, 3, 60}},
		{40, []int{50}},
		{5, []int{20, 130}}, // more pages than every combination of
	} {
		tl := newTornLog(t, tc.acked, tc.batches...)
		n := len(tl.pages)
		if n < 3 {
			t.Fatalf("acked %d, batches %v: the unsynced region is %d pages; want several", tc.acked, tc.batches, n)
		}
		var combos [][]tear
		if n <= 5 {
			combos = tearCombos(n)
		} else {
			// Every page boundary, both ways round (the case: a
			// zeroed page, then pages that landed), then random ones.
			for k := 0; k <= n; k++ {
				for _, pair := range [][2]tear{{landed, zeroed}, {zeroed, landed}, {landed, stale}, {garbage, landed}, {landed, garbage}} {
					c := make([]tear, n)
					for i := range c {
						c[i] = pair[1]
						if i < k {
							c[i] = pair[0]
						}
					}
					combos = append(combos, c)
				}
			}
			rng := rand.New(rand.NewSource(int64(tc.acked)))
			for i := 0; i < 1500; i++ {
				c := make([]tear, n)
				for j := range c {
					c[j] = allTears[rng.Intn(len(allTears))]
				}
				combos = append(combos, c)
			}
		}
		for i, c := range combos {
			if err := tl.cut(c, int64(i)); err != nil {
				t.Fatalf("acked 1..%d, unacknowledged up to %d over pages %v torn %v: %v", tc.acked, tl.last, tl.pages, c, err)
			}
		}
		t.Logf("%d entries acknowledged, %d..%d unsynced over %d pages: %d tears", tc.acked, tc.acked+1, tl.last, n, len(combos))
	}
}

// FuzzTornTail tears an unacknowledged tail the fuzzer chooses: how many
// entries were acknowledged, how the rest were batched, and what became of
// each unsynced page.
func FuzzTornTail(f *testing.F) {
	f.Add(uint8(0), uint8(30), uint8(0), []byte{1, 0, 2, 3})
	f.Add(uint8(7), uint8(12), uint8(5), []byte{0, 1, 0, 1, 0})
	f.Add(uint8(20), uint8(40), uint8(39), []byte{3, 3, 1, 0, 2})
	f.Fuzz(func(t *testing.T, acked, unacked, split uint8, tears []byte) {
		a, u := uint64(acked%50), 1+int(unacked%45)
		batches := []int{u}
		if s := int(split) % u; s > 0 {
			batches = []int{s, u - s}
		}
		tl := newTornLog(t, a, batches...)
		c := make([]tear, len(tl.pages))
		for i := range c {
			if i < len(tears) {
				c[i] = allTears[int(tears[i])%len(allTears)]
			}
		}
		if err := tl.cut(c, int64(len(tears))); err != nil {
			t.Fatalf("acked 1..%d, batches %v, pages %v torn %v: %v", a, batches, tl.pages, c, err)
		}
	})
}

// A record on disk before the durable end that reads back wrong is
// corruption, whatever follows it: Open refuses, naming the file and the
// record's offset. That includes the last acknowledged record followed by
// nothing but zeros, which a rule without a durable mark cannot tell from a
// torn write.
func TestBadAcknowledgedRecordRefusesToOpen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry uint64 // whose record goes bad
		at    int    // byte of the record that changes
	}{
		{"a middle record's body", 10, recordHeader + 5},
		{"a middle record's length", 10, 0},
		{"a middle record's checksum", 10, 5},
		{"the last acknowledged record, zeros after it", 30, recordHeader + 20},
		{"the last acknowledged record's length", 30, 1},
		{"the first record", 1, recordHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newSimFS()
			l := openSim(t, fsys, tornOpts)
			for i := uint64(1); i <= 30; i += 4 {
				if err := l.StoreLogs(batchT(i, min(i+3, 30), 1)); err != nil {
					t.Fatal(err)
				}
			}
			seg := l.segs[0]
			off := seg.offsets[tc.entry-1]
			// The power goes: what was acknowledged is on disk, and then
			// the medium damages one byte of it.
			img := fsys.clone()
			img.powerCut(cutPolicy{})
			img.rot(seg.path, off+int64(tc.at))
			_, err := open(img, simDir, tornOpts)
			if err == nil {
				t.Fatal("Open succeeded on a log that lost an acknowledged entry")
			}
			for _, want := range []string{filepath.Base(seg.path), fmt.Sprintf("offset %d", off)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// Open makes durable, and covers with a durable mark, everything it
// recovers, because raft treats what it finds at start as stored: entries
// written and never acknowledged before the process died, that Open then
// served, are protected like acknowledged ones after a later power cut.
func TestRecoveredEntriesAreProtectedLikeAcknowledgedOnes(t *testing.T) {
	fsys := newSimFS()
	l := openSim(t, fsys, tornOpts)
	if err := l.StoreLogs(batchT(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(batchT(6, 12, 1)); err != nil {
		t.Fatal(err)
	}
	fsys.kill() // the process dies; the page cache holds entries 6..12
	l = openSim(t, fsys, tornOpts)
	assertLogRange(t, l, 1, 12)
	seg := l.segs[0]
	off := seg.offsets[11]
	fsys.powerCut(cutPolicy{})
	fsys.rot(seg.path, off+recordHeader+3)
	_, err := open(fsys, simDir, tornOpts)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", off)) {
		t.Fatalf("Open = %v, want a refusal naming offset %d", err, off)
	}
}

func assertLogRange(t *testing.T, l *Log, first, last uint64) {
	t.Helper()
	f, _ := l.FirstIndex()
	la, _ := l.LastIndex()
	if f != first || la != last {
		t.Fatalf("log is %d..%d, want %d..%d", f, la, first, last)
	}
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
	}
}

// The case on a real disk: after the last record a page of zeros,
// then a few stray bytes of a batch that never completed.
func TestZeroPageThenStrayBytesOpens(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 40)
	end := l.segs[0].end
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(segmentFiles(t, dir)[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0x17, 0x2a, 0x00, 0x9c, 0x41}, end+pageBytes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l = openFile(t, dir, Options{})
	assertRange(t, l, 1, 40)
	appendRange(t, l, 41, 45)
	l.Close()
	assertRange(t, openFile(t, dir, Options{}), 1, 45)
}

// v1Segment is a segment as format version 1 wrote it: the header, then
// the records, then zeros to the preallocated size.
func v1Segment(base uint64, entries []*raft.Log, size int) []byte {
	b := make([]byte, segmentHeader)
	copy(b, segmentMagicV1)
	binary.LittleEndian.PutUint64(b[8:], base)
	for _, e := range entries {
		b = appendRecord(b, e)
	}
	return append(b, make([]byte, max(0, size-len(b)))...)
}

func writeDurable(t *testing.T, fsys *simFS, path string, data []byte) {
	t.Helper()
	f, err := fsys.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
}

// A log written by format version 1 opens: its sealed segments are checked
// as before; its last segment, which has no durable mark, is cut at the
// first bad record (the case: a zeroed page, then stray bytes, no
// longer refuses); appends go to a new version 2 segment, after which the
// version 1 segment is sealed and checked in full.
func TestVersion1LogOpensAndMovesOn(t *testing.T) {
	fsys := newSimFS()
	// A sealed segment was cut to its records; the last is preallocated.
	writeDurable(t, fsys, filepath.Join(simDir, segmentName(1)), v1Segment(1, batchT(1, 10, 1), 0))
	end := len(v1Segment(11, batchT(11, 20, 1), 0))
	last := v1Segment(11, batchT(11, 20, 1), 8*pageBytes)
	copy(last[end+pageBytes:], []byte{1, 2, 3, 4, 5})
	lastPath := filepath.Join(simDir, segmentName(11))
	writeDurable(t, fsys, lastPath, last)

	l := openSim(t, fsys, simOpts)
	assertLogRange(t, l, 1, 20)
	if err := l.StoreLogs(batchT(21, 25, 1)); err != nil {
		t.Fatal(err)
	}
	if !fsys.exists(filepath.Join(simDir, segmentName(21))) {
		t.Fatal("the append after a version 1 segment did not start a new segment")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openSim(t, fsys, simOpts)
	assertLogRange(t, l, 1, 25)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Now sealed, the version 1 segment is checked in full.
	fsys.rot(lastPath, int64(end)-3)
	if _, err := open(fsys, simDir, simOpts); err == nil || !strings.Contains(err.Error(), filepath.Base(lastPath)) {
		t.Fatalf("Open = %v, want a refusal naming %s", err, filepath.Base(lastPath))
	}
}
