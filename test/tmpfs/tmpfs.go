// Package tmpfs gives tests a small real file system that can run full:
// a tmpfs of a given size, mounted for the test and unmounted after it.
// A full volume is a fault no simulated disk reproduces faithfully
// (fallocate, a rename's new inode, the page a directory grows by), so the
// tests of a node on a full disk run on a real one. Mounting needs root:
// without it the tests are skipped.
package tmpfs

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new directory and unmounts it
// when the test ends. It skips the test when not run as root.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		// Lazily: a process the test started may still hold a file open
		// when the cleanups run in the wrong order for us.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Resize changes the size of the tmpfs mounted on dir, as growing a
// volume does; what it holds stays.
func Resize(t testing.TB, dir string, size int64) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%d", size), dir).CombinedOutput(); err != nil {
		t.Fatalf("resize the tmpfs on %s: %v: %s", dir, err, out)
	}
}

// Free returns the bytes of dir's file system that are free for an
// unprivileged user, and its size.
func Free(t testing.TB, dir string) (free, size uint64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize)
}
