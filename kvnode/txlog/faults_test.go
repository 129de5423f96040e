package txlog

import (
	"errors"
	"os"
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
			l.faults.datasync = func(*os.File) error {
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
			case <-done:
			case <-timeout:
				t.Fatalf("deadlock: %s never returned", tc.name)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
