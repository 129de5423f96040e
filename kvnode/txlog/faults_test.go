package txlog

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// An fdatasync that fails while compaction (or Close) waits to close
// segment files must not deadlock the log: the failed sync records its
// error under mu, and compaction holds mu while it waits for the files.
func TestFailedSyncDuringCompactionDoesNotDeadlock(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(l *Log) error
	}{
		{"compaction", func(l *Log) error { return l.DeleteRange(1, 150) }},
		{"close", func(l *Log) error { return l.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newSimFS()
			l := openSim(t, fsys, Options{SegmentBytes: 4096})
			appendRange(t, l, 1, 200)
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			fsys.beforeSync = func(path string) error {
				if !strings.HasSuffix(path, ".seg") {
					return nil // compaction records its first index
				}
				stalled := false
				once.Do(func() { stalled = true })
				if stalled {
					// The first sync stalls, as a failing disk does, then fails.
					close(entered)
					<-release
				}
				return syscall.EIO
			}
			stored := make(chan error, 1)
			go func() { stored <- l.StoreLog(entry(201)) }()
			<-entered
			done := make(chan error, 1)
			go func() { done <- tc.op(l) }()
			// Give the operation time to take mu and wait for the files.
			time.Sleep(100 * time.Millisecond)
			close(release)

			timeout := time.After(5 * time.Second)
			select {
			case err := <-stored:
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("StoreLog = %v, want the fdatasync's EIO", err)
				}
			case <-timeout:
				t.Fatal("deadlock: the append whose fdatasync failed never returned")
			}
			select {
			case err := <-done:
				// Compaction may finish before the failure is recorded, or
				// after and refuse; Close may report the failed sync.
				t.Logf("%s: %v", tc.name, err)
			case <-timeout:
				t.Fatalf("deadlock: %s never returned", tc.name)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A crash part way through a suffix deletion (raft truncating a follower's
// conflicting tail) must leave a log that opens: the segment holding the
// cut gets its durable mark first, whole segments after the cut are removed
// (the highest first, each durably) before the segment holding the cut is
// truncated, so no state in between has a gap or a mark past its records.
// The power goes at each sync of the deletion in turn.
func TestCrashDuringSuffixDeletionLeavesAnOpenableLog(t *testing.T) {
	for _, from := range []uint64{
		60,  // inside an earlier segment
		0,   // at the first entry of an earlier segment (set below)
		199, // inside the last segment: nothing to remove
	} {
		for k := 1; ; k++ {
			fsys := newSimFS()
			opts := Options{SegmentBytes: 4096}
			l := openSim(t, fsys, opts)
			appendRange(t, l, 1, 200)
			if len(l.segs) < 3 {
				t.Fatalf("want several segments, got %d", len(l.segs))
			}
			from := from
			if from == 0 {
				from = l.segs[1].base
			}
			var snap *simFS
			syncs := 0
			fsys.beforeSync = func(string) error {
				if syncs++; syncs == k {
					snap = fsys.clone()
				}
				if syncs >= k {
					return errPowerCut
				}
				return nil
			}
			err := l.DeleteRange(from, 200)
			if snap == nil {
				if err != nil {
					t.Fatal(err)
				}
				break // past the deletion's last sync
			}
			if !errors.Is(err, errPowerCut) {
				t.Fatalf("from %d: DeleteRange = %v, want the power cut", from, err)
			}
			for _, p := range cutPolicies() {
				img := snap.clone()
				img.powerCut(p)
				l, err := open(img, simDir, opts)
				if err != nil {
					t.Fatalf("from %d, power cut at the deletion's sync %d, %s: Open: %v", from, k, p.name, err)
				}
				// Each entry before the cut survives; anything after it may
				// or may not, but the log is contiguous and raft can finish
				// the deletion.
				last, _ := l.LastIndex()
				if first, _ := l.FirstIndex(); first != 1 || last < from-1 || last > 200 {
					t.Fatalf("from %d, sync %d, %s: log is %d..%d after the crash", from, k, p.name, first, last)
				}
				assertRange(t, l, 1, last)
				if err := l.DeleteRange(from, last); err != nil {
					t.Fatal(err)
				}
				appendRange(t, l, from, from+5)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l, err = open(img, simDir, opts)
				if err != nil {
					t.Fatal(err)
				}
				assertRange(t, l, 1, from+5)
				_ = l.Close()
			}
		}
	}
}

// A crash part way through compaction or the deletion of everything must
// leave a log that opens at the right first index: the deletion either
// did not happen, or it did and the segments a crash kept are recognised
// as deleted and removed, never read as the log's start. The power goes at
// each sync of the deletion in turn.
func TestCrashDuringCompactionLeavesTheRightStart(t *testing.T) {
	for _, max := range []uint64{150, 200} {
		for k := 1; ; k++ {
			fsys := newSimFS()
			opts := Options{SegmentBytes: 4096}
			l := openSim(t, fsys, opts)
			appendRange(t, l, 1, 200)
			var snap *simFS
			syncs := 0
			fsys.beforeSync = func(string) error {
				if syncs++; syncs == k {
					snap = fsys.clone()
				}
				if syncs >= k {
					return errPowerCut
				}
				return nil
			}
			err := l.DeleteRange(1, max)
			if snap == nil {
				if err != nil {
					t.Fatal(err)
				}
				break // past the deletion's last sync
			}
			for _, p := range cutPolicies() {
				img := snap.clone()
				img.powerCut(p)
				l, err := open(img, simDir, opts)
				if err != nil {
					t.Fatalf("deleting 1..%d, power cut at its sync %d, %s: Open: %v", max, k, p.name, err)
				}
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				switch {
				case first == 1 && last == 200:
					// Not deleted: raft deletes again.
					assertRange(t, l, 1, 200)
					if err := l.DeleteRange(1, max); err != nil {
						t.Fatal(err)
					}
				case max == 200 && first == 0 && last == 0:
				case max < 200 && first == max+1 && last == 200:
					assertRange(t, l, max+1, 200)
				default:
					t.Fatalf("deleting 1..%d, power cut at its sync %d, %s: log is %d..%d", max, k, p.name, first, last)
				}
				// Open removed what the crash kept of deleted segments.
				for _, path := range img.segmentPaths(simDir) {
					found := false
					for _, s := range l.segs {
						found = found || s.path == path
					}
					if !found {
						t.Fatalf("deleting 1..%d, power cut at its sync %d, %s: %s is left over", max, k, p.name, path)
					}
				}
				// The log goes on, after a snapshot install's restart past it.
				next := uint64(201)
				if max == 200 {
					next = 1000
				}
				appendRange(t, l, next, next+5)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l, err = open(img, simDir, opts)
				if err != nil {
					t.Fatal(err)
				}
				first, _ = l.FirstIndex()
				if max == 200 {
					assertRange(t, l, 1000, 1005)
				} else {
					assertRange(t, l, first, 206)
				}
				_ = l.Close()
			}
		}
	}
}

// Compaction is there to free space: once DeleteRange returns, a power
// cut must not bring the removed segments back.
func TestCompactedSegmentsStayRemoved(t *testing.T) {
	for _, max := range []uint64{250, 300} {
		fsys := newSimFS()
		l := openSim(t, fsys, Options{SegmentBytes: 4096})
		appendRange(t, l, 1, 300)
		before := fsys.segmentPaths(simDir)
		if err := l.DeleteRange(1, max); err != nil {
			t.Fatal(err)
		}
		after := map[string]bool{}
		for _, p := range fsys.segmentPaths(simDir) {
			after[p] = true
		}
		if len(after) >= len(before) {
			t.Fatalf("deleting 1..%d removed no segment", max)
		}
		fsys.powerCut(cutPolicy{}) // nothing unsynced survives
		for _, p := range before {
			if !after[p] && fsys.exists(p) {
				t.Errorf("deleting 1..%d: %s is back after a power cut", max, p)
			}
		}
	}
}

// Two writers on one log directory would interleave their appends and
// lose acknowledged writes: the second Open must fail at once, naming the
// directory. flock locks belong to the open file description, so a second
// Open in the same process conflicts just as another process would.
func TestSecondOpenOfADirectoryFails(t *testing.T) {
	dir := t.TempDir()
	l := openFile(t, dir, Options{})
	appendRange(t, l, 1, 3)

	start := time.Now()
	second, err := Open(dir, Options{})
	if err == nil {
		_ = second.Close()
		t.Fatal("a second Open of the same directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	for _, want := range []string{dir, "another process"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the second Open waited %v for the lock instead of failing at once", d)
	}
	assertRange(t, l, 1, 3)

	// Close lets go of the directory.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	assertRange(t, openFile(t, dir, Options{}), 1, 3)
}
