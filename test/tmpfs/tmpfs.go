// Package tmpfs gives tests a small real file system that can run full:
// a tmpfs of a given size, mounted for the test and unmounted after it,
// or an ext4 image on a loop device (Ext4). A full volume is a fault no
// simulated disk reproduces faithfully (fallocate, a rename's new inode,
// the page a directory grows by), and the two differ where it matters: a
// fallocate that runs out of space gives back what it allocated on tmpfs,
// and keeps it, grown into the file, on ext4 and XFS. So the tests of a
// node on a full disk run on real ones. Mounting needs root: without it
// the tests are skipped.
package tmpfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// Ext4 makes an ext4 file system of size bytes in an image file, with no
// blocks reserved for root (so that a full volume is full for everyone),
// mounts it on a new directory through a loop device, and unmounts it when
// the test ends. It skips the test when not run as root or when
// mkfs.ext4 (e2fsprogs; hack/deps.sh verify installs it) is missing.
func Ext4(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an ext4 image needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 is not installed (Debian package e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", img, err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s on %s: %v: %s", img, dir, err, out)
	}
	// Registered after t.TempDir's own cleanups, so it runs before they
	// remove the mount point and the image.
	t.Cleanup(func() {
		// Lazily, as Mount does; the loop device is released once the
		// last file on it is closed.
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
