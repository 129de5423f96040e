package txlog

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// fileSystem is every file operation the log performs. Production runs on
// osFS; the recovery tests run the same code on a simulated disk that loses
// power and keeps only what a completed sync covered, which is how they
// prove that each sync below is needed.
type fileSystem interface {
	MkdirAll(dir string) error
	// Lock takes the directory's exclusive lock, failing at once with
	// ErrLocked when someone holds it; closing the result releases it.
	Lock(dir string) (io.Closer, error)
	// ReadDir returns the names of the entries in dir.
	ReadDir(dir string) ([]string, error)
	ReadFile(name string) ([]byte, error)
	// Create opens name for reading and writing, created empty or
	// truncated to empty.
	Create(name string) (file, error)
	// OpenRW opens an existing file for reading and writing.
	OpenRW(name string) (file, error)
	Rename(from, to string) error
	Remove(name string) error
	// SyncDir makes the creates, renames and removes in dir durable.
	SyncDir(dir string) error
}

// file is an open file as the log uses it: positioned reads and writes
// only, so that appends and syncs running at the same time share no offset.
type file interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	// Allocate reserves space up to size bytes (fallocate), so that later
	// writes inside it need not change the file's size.
	Allocate(size int64) error
	// Sync makes the file's data and size durable (fdatasync).
	Sync() error
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

func (osFS) Lock(dir string) (io.Closer, error) {
	f, err := lockDir(dir)
	if f == nil || err != nil {
		// A nil *os.File in an io.Closer would not compare equal to nil.
		return nopCloser{}, err
	}
	return f, nil
}

func (osFS) ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

func (osFS) Create(name string) (file, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenRW(name string) (file, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(from, to string) error { return os.Rename(from, to) }

func (osFS) Remove(name string) error { return os.Remove(name) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	_ = d.Close() // read-only
	return err
}

type osFile struct{ *os.File }

func (f osFile) Allocate(size int64) error { return preallocate(f.File, size) }

func (f osFile) Sync() error { return datasync(f.File) }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// isNoSpace reports whether err says the volume (or the user's quota) is
// full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
