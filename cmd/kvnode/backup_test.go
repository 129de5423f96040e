package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// fetchBackup saves GET /v1/cluster/backup of p to a file and returns the
// file and the response's headers and trailer.
func fetchBackup(t *testing.T, p *proc, dir string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(p.url(clusterapi.PathBackup))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s", clusterapi.PathBackup, resp.StatusCode, b)
	}
	path := filepath.Join(dir, "backup.kvb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	h := resp.Header.Clone()
	for k, v := range resp.Trailer {
		h[k] = v
	}
	return path, h
}

func clusterID(t *testing.T, p *proc) string {
	t.Helper()
	var c clusterapi.Cluster
	code, body := request(t, http.DefaultClient, "GET", p.url(clusterapi.PathCluster), "")
	if code != 200 || json.Unmarshal([]byte(body), &c) != nil {
		t.Fatalf("GET %s = %d %s", clusterapi.PathCluster, code, body)
	}
	return c.ClusterID
}

// refused runs kvnode with args, expects it to exit non-zero within 20 s,
// and returns its output.
func refused(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvnodeBin, append([]string{"--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--bootstrap", "always", "--node-id", "n0"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("kvnode %v was still running after 20s:\n%s", args, out)
	}
	if err == nil {
		t.Fatalf("kvnode %v exited 0:\n%s", args, out)
	}
	return string(out)
}

// A backup of a store restores into a new one: every key, a new cluster
// ID, the same data after a restart with the same flag. A damaged or
// truncated backup, and a restore onto a volume with data, are refused
// with a message that says why.
func TestBackupAndRestore(t *testing.T) {
	tmp := t.TempDir()
	src := start(t, filepath.Join(tmp, "src"))
	want := map[string]string{}
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("k%03d", i), strings.Repeat(strconv.Itoa(i), 10)
		if code, body := request(t, http.DefaultClient, "PUT", src.url("/v1/key/"+k), v); code != 201 {
			t.Fatalf("PUT %s = %d %s", k, code, body)
		}
		want[k] = v
	}
	file, h := fetchBackup(t, src, tmp)
	if h.Get(backup.HeaderKeys) != "300" || h.Get(backup.HeaderClusterID) != clusterID(t, src) || h.Get(backup.HeaderIndex) == "" || h.Get(backup.HeaderFormatVersion) != "1" {
		t.Fatalf("backup headers: %v", h)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	hdr, sum, err := backup.Verify(f)
	f.Close()
	if err != nil || hdr.Keys != 300 || sum != h.Get(backup.TrailerSHA256) {
		t.Fatalf("the backup file: %+v %s %v (trailer %s)", hdr, sum, err, h.Get(backup.TrailerSHA256))
	}
	// Writes after the backup are not in it.
	if code, _ := request(t, http.DefaultClient, "PUT", src.url("/v1/key/later"), "x"); code != 201 {
		t.Fatal("PUT later")
	}

	dst := filepath.Join(tmp, "dst")
	p := start(t, dst, "--restore-from", file)
	check := func(p *proc) {
		t.Helper()
		for k, v := range want {
			if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k), ""); code != 200 || body != v {
				t.Fatalf("restored %s = %d %q, want %q", k, code, body, v)
			}
		}
		if code, _ := request(t, http.DefaultClient, "GET", p.url("/v1/key/later"), ""); code != 404 {
			t.Fatalf("a key written after the backup is in the restored store: %d", code)
		}
	}
	check(p)
	restoredID := clusterID(t, p)
	if restoredID == "" || restoredID == hdr.ClusterID {
		t.Fatalf("restored cluster ID %q, the backup's %q: want a new one", restoredID, hdr.ClusterID)
	}
	if code, body := request(t, http.DefaultClient, "PUT", p.url("/v1/key/after"), "y"); code != 201 {
		t.Fatalf("PUT on the restored store = %d %s", code, body)
	}
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)
	// The same flag on the restored volume: it starts with what it has.
	p = start(t, dst, "--restore-from", file)
	check(p)
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/after"), ""); code != 200 || body != "y" {
		t.Fatalf("a write after the restore, after a restart = %d %q", code, body)
	}
	if got := clusterID(t, p); got != restoredID {
		t.Fatalf("cluster ID after a restart %q, want %q", got, restoredID)
	}
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)

	// Never onto data: the source's own volume.
	src.signal(syscall.SIGTERM)
	src.wait(20 * time.Second)
	if out := refused(t, "--data-dir", filepath.Join(tmp, "src"), "--restore-from", file); !strings.Contains(out, "already holds Raft state") {
		t.Fatalf("restore onto a volume with data:\n%s", out)
	}

	// Damaged and truncated backups.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, damaged := range map[string][]byte{
		"flipped":   func() []byte { c := append([]byte(nil), b...); c[len(c)/2] ^= 0x40; return c }(),
		"truncated": b[:len(b)-100],
		"not":       []byte("PUT a=1\n"),
	} {
		path := filepath.Join(tmp, name+".kvb")
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(tmp, "restore-"+name)
		out := refused(t, "--data-dir", dir, "--restore-from", path)
		if !strings.Contains(out, path) || !strings.Contains(out, "corrupt") {
			t.Errorf("a %s backup: the refusal does not name the file and say corrupt:\n%s", name, out)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "snapshots", "snapshots")); len(entries) > 0 {
			t.Errorf("a %s backup left a snapshot in %s", name, dir)
		}
	}
}
