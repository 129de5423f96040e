//go:build linux

package txlog

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// preallocate reserves size bytes for f so that appends do not change the
// file's size, which lets fdatasync skip the inode update.
func preallocate(f *os.File, size int64) error {
	fd := int(f.Fd())
	// Refused up front when the volume plainly lacks the room: a fallocate
	// that runs out of space holds all that was free until the caller
	// gives it back, and whatever else writes to the volume meanwhile
	// (raft's term, a snapshot) fails. Only a shortcut: the caller gives
	// back what a failed fallocate took in any case.
	var st syscall.Stat_t
	var fs syscall.Statfs_t
	if syscall.Fstat(fd, &st) == nil && syscall.Fstatfs(fd, &fs) == nil {
		if need, free := size-st.Blocks*512, fs.Bavail*uint64(fs.Bsize); need > 0 && uint64(need) > free {
			return fmt.Errorf("%d more bytes needed, %d free: %w", need, free, syscall.ENOSPC)
		}
	}
	err := syscall.Fallocate(fd, 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		// The file system cannot: appends still work, only slower, and
		// take their space as they write; one that runs out of it is cut
		// back and refused with ErrNoSpace (Log.unwrite).
		return nil
	}
	return err
}

// datasync flushes f's data (and the metadata needed to read it back).
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
