//go:build linux

package txlog

import (
	"errors"
	"os"
	"syscall"
)

// preallocate reserves size bytes for f so that appends do not change the
// file's size, which lets fdatasync skip the inode update.
func preallocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return nil // the file system cannot: appends still work, only slower
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
