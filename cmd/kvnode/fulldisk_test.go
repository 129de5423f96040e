package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/tmpfs"
)

// The volume of the full-disk tests: large enough for a 64 MiB segment,
// as the 150 MB volume was, and small enough to fill quickly.
const volumeBytes = 96 << 20

// fillClient gives up on a request that hangs: a full disk must be
// answered, not waited out.
var fillClient = &http.Client{Timeout: 15 * time.Second}

func value4k(i int) string {
	return strings.Repeat(fmt.Sprintf("%08d", i), 512)
}

// fill writes 4 KiB values under new keys until a PUT is refused, and
// returns how many were acknowledged and the refusal.
//
// Full means full for good: the first 507 makes the node snapshot and
// compact, which may give back room for more, so a refused key is tried
// again until it has been refused 20 times in a row (2 s). The keys
// acknowledged are prefix000000 up to the count returned, with no gaps.
func fill(t *testing.T, p *proc, prefix string) (int, int, string) {
	t.Helper()
	refused := 0
	for i := 0; ; {
		if i > 2*volumeBytes/4096 {
			t.Fatalf("%d writes of 4 KiB acknowledged on a %d-byte volume", i, volumeBytes)
		}
		req, _ := http.NewRequest("PUT", p.url(fmt.Sprintf("/v1/key/%s%06d", prefix, i)), strings.NewReader(value4k(i)))
		resp, err := fillClient.Do(req)
		if err != nil {
			t.Fatalf("PUT %d: %v", i, err)
		}
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
			i, refused = i+1, 0
		case resp.StatusCode == http.StatusInsufficientStorage && refused < 20:
			refused++
			time.Sleep(100 * time.Millisecond)
		default:
			return i, resp.StatusCode, string(b[:n])
		}
	}
}

func nodeStatus(t *testing.T, p *proc) clusterapi.NodeStatus {
	t.Helper()
	code, body := request(t, http.DefaultClient, "GET", p.url(clusterapi.PathStatus), "")
	if code != 200 {
		t.Fatalf("GET %s = %d %s", clusterapi.PathStatus, code, body)
	}
	var s clusterapi.NodeStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A node on a volume that fills up refuses PUTs with 507 and a one-line
// message, keeps serving reads and DELETEs, stays alive, says so in its
// status and metrics, and takes writes again, without a restart, once
// the volume grows.
func TestFullDiskRefusesWritesAndRecoversWhenTheVolumeGrows(t *testing.T) {
	dir := tmpfs.Mount(t, volumeBytes)
	p := start(t, dir)
	acked, code, msg := fill(t, p, "f")
	if code != http.StatusInsufficientStorage || strings.Count(msg, "\n") != 1 {
		t.Fatalf("after %d writes: %d %q, want 507 and a one-line message", acked, code, msg)
	}
	t.Logf("%d writes of 4 KiB (%d bytes of values) acknowledged on a %d-byte volume before 507: %s", acked, acked*4096, volumeBytes, strings.TrimSpace(msg))
	if acked*4096 < volumeBytes/4 {
		t.Errorf("only %d bytes of values fit on a %d-byte volume", acked*4096, volumeBytes)
	}
	last := acked - 1
	p.session(t, http.DefaultClient, []exchange{
		{"GET", "/livez", "", 200, "ok\n"},
		{"GET", "/readyz", "", 200, "ok\n"},
		{"GET", "/v1/key/f000000", "", 200, value4k(0)},
		{"GET", fmt.Sprintf("/v1/key/f%06d", last), "", 200, value4k(last)},
		{"GET", fmt.Sprintf("/v1/key/f%06d", acked), "", 404, ""},
		{"PUT", "/v1/key/again", "x", 507, ""},
		{"DELETE", "/v1/key/f000001", "", 200, ""},
		{"GET", "/v1/key/f000001", "", 404, ""},
		{"GET", "/v1/keys?prefix=f00000&limit=3", "", 200, ""},
	})
	s := nodeStatus(t, p)
	if s.Storage == nil || !s.Storage.Full || s.Storage.CapacityBytes == 0 || s.Storage.ReserveBytes == 0 {
		t.Fatalf("status while full: storage %+v", s.Storage)
	}
	_, metrics := request(t, http.DefaultClient, "GET", p.url("/metrics"), "")
	for _, m := range []string{"kvnode_storage_full 1", "kvnode_storage_free_bytes", "kvnode_storage_reserve_bytes", "kvnode_storage_capacity_bytes"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	tmpfs.Resize(t, dir, 4*volumeBytes)
	grown := time.Now()
	for {
		code, body := request(t, fillClient, "PUT", p.url("/v1/key/after-growth"), "v")
		if code == http.StatusCreated {
			break
		}
		if code != http.StatusInsufficientStorage || time.Since(grown) > 10*time.Second {
			t.Fatalf("%v after the volume grew: PUT = %d %s", time.Since(grown), code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("writes accepted again %v after the volume grew", time.Since(grown).Round(time.Millisecond))
	if s := nodeStatus(t, p); s.Storage == nil || s.Storage.Full {
		t.Fatalf("status after the volume grew: storage %+v", s.Storage)
	}
	if more, code, _ := fill(t, p, "g"); code != http.StatusInsufficientStorage || more < acked {
		t.Errorf("after the volume grew fourfold, %d more writes fit (%d before), then %d", more, acked, code)
	}
	if strings.Contains(p.output(), "panic") {
		t.Fatal("kvnode panicked")
	}
}

// A node stopped while its volume is full starts again, serves the reads
// of what it acknowledged and DELETEs, and refuses PUTs with 507 once full
// again (a snapshot cut short by the kill gives its space back): no
// crash loop.
func TestRestartWhileFull(t *testing.T) {
	dir := tmpfs.Mount(t, volumeBytes)
	p := start(t, dir)
	acked, code, msg := fill(t, p, "f")
	if code != http.StatusInsufficientStorage {
		t.Fatalf("after %d writes: %d %q, want 507", acked, code, msg)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	free, _ := tmpfs.Free(t, dir)
	t.Logf("restarting with %d bytes free", free)

	p = start(t, dir)
	for _, i := range []int{0, acked / 2, acked - 1} {
		k := fmt.Sprintf("/v1/key/f%06d", i)
		if code, body := request(t, fillClient, "GET", p.url(k), ""); code != 200 || body != value4k(i) {
			t.Fatalf("after the restart GET %s = %d (%d bytes)", k, code, len(body))
		}
	}
	if more, code, msg := fill(t, p, "h"); code != http.StatusInsufficientStorage {
		t.Fatalf("after the restart and %d more writes: %d %q, want 507", more, code, msg)
	}
	p.session(t, fillClient, []exchange{
		{"PUT", "/v1/key/again", strings.Repeat("x", 4096), 507, ""},
		{"DELETE", "/v1/key/f000000", "", 200, ""},
		{"GET", "/v1/key/f000000", "", 404, ""},
		{"GET", "/livez", "", 200, "ok\n"},
	})
	// And once more, after the DELETE, from a clean stop.
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM on a full volume", code)
	}
	// And once more with the volume filled to the last byte by something
	// else: raft must still record its term (before, it panicked).
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	p = start(t, dir)
	if code, _ := request(t, fillClient, "GET", p.url("/v1/key/f000001"), ""); code != 200 {
		t.Fatalf("after a restart on a volume with nothing free, GET = %d", code)
	}
	if code, body := request(t, fillClient, "PUT", p.url("/v1/key/again"), "x"); code != 507 {
		t.Fatalf("after a restart on a volume with nothing free, PUT = %d %s", code, body)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.session(t, fillClient, []exchange{
		{"DELETE", "/v1/key/f000002", "", 200, ""},
		{"GET", "/livez", "", 200, "ok\n"},
	})
	if strings.Contains(p.output(), "panic") {
		t.Fatal("kvnode panicked")
	}
}

// Overwriting a few keys writes far more log than the volume holds: the
// node must snapshot and compact when space runs low, so that every write
// is taken (after at most a short wait while it does), not refused for good.
func TestCompactionFreesSpace(t *testing.T) {
	dir := tmpfs.Mount(t, volumeBytes)
	p := start(t, dir)
	value := strings.Repeat("v", 60<<10)
	written := 0
	for i := 0; written < 3*volumeBytes; i++ {
		k := p.url(fmt.Sprintf("/v1/key/k%02d", i%40))
		since := time.Now()
		for {
			code, body := request(t, fillClient, "PUT", k, value)
			if code == http.StatusCreated {
				break
			}
			if code != http.StatusInsufficientStorage || time.Since(since) > 10*time.Second {
				t.Fatalf("after %d bytes written: PUT = %d %s", written, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		written += len(value)
	}
	free, size := tmpfs.Free(t, dir)
	t.Logf("%d bytes overwritten on a %d-byte volume; %d bytes free at the end", written, size, free)
}
