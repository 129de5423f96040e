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
			l, err := Open(t.TempDir(), Options{SegmentBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			appendRange(t, l, 1, 200)
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			l.faults.datasync = func(file) error {
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
// conflicting tail) must leave a log that opens: whole segments after the
// cut are removed before the segment holding the cut is truncated, so no
// state in between has a gap.
func TestCrashDuringSuffixDeletionLeavesAnOpenableLog(t *testing.T) {
	for _, from := range []uint64{
		60,  // inside an earlier segment
		0,   // at the first entry of an earlier segment (set below)
		199, // inside the last segment: nothing to remove
	} {
		dir := t.TempDir()
		opts := Options{SegmentBytes: 4096}
		l, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		appendRange(t, l, 1, 200)
		if from == 0 {
			from = l.segs[1].base
		}
		if len(l.segs) < 3 {
			t.Fatalf("want several segments, got %d", len(l.segs))
		}
		crash := errors.New("simulated crash")
		l.faults.truncateStep = func() error { return crash }
		if err := l.DeleteRange(from, 200); !errors.Is(err, crash) {
			t.Fatalf("from %d: DeleteRange = %v, want the simulated crash", from, err)
		}
		_ = l.Close() // only closes the files: the log failed at the crash

		l, err = Open(dir, opts)
		if err != nil {
			t.Fatalf("from %d: Open after a crash in DeleteRange: %v", from, err)
		}
		// Each entry before the cut survives; anything after it may or may
		// not, but the log is contiguous and raft can finish the deletion.
		last, _ := l.LastIndex()
		if first, _ := l.FirstIndex(); first != 1 || last < from-1 || last > 200 {
			t.Fatalf("from %d: log is %d..%d after the crash", from, first, last)
		}
		assertRange(t, l, 1, last)
		if err := l.DeleteRange(from, last); err != nil {
			t.Fatal(err)
		}
		appendRange(t, l, from, from+5)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		assertRange(t, l, 1, from+5)
		_ = l.Close()
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
