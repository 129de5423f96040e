//go:build unix

package txlog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the file in a log directory that the Log holding it has
// flocked.
const lockName = "LOCK"

// lockDir takes an exclusive flock on dir's LOCK file, failing at once when
// someone holds it. The lock belongs to the open file description, so it
// also excludes a second Open in this process, and the kernel drops it when
// the holder exits, however it exits: a crash never leaves a stale lock.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("txlog: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close() // holds nothing
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by another process (or another open log in this one): %s is locked", ErrLocked, dir, path)
		}
		return nil, fmt.Errorf("txlog: lock %s: %w", path, err)
	}
	return f, nil
}
