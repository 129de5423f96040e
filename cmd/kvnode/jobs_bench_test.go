package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// benchValue is key i's 1 KiB value: derived from i, so that a sample
// can be checked after the restore.
func benchValue(i int) string {
	return strings.Repeat(fmt.Sprintf("%015d.", i), 64)
}

// How long a backup and a restore of a large store take, to a directory
// and to SeaweedFS (with KV_WEED). Only with KV_BACKUP_BENCH_MB set: it
// writes that many MB of 1 KiB values (1000 per MB) first.
//
//	KV_BACKUP_BENCH_MB=1000 KV_WEED=/path/to/weed go test -count=1 -v -timeout 2h -run TestBackupJobTimes ./cmd/kvnode
func TestBackupJobTimes(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("KV_BACKUP_BENCH_MB"))
	if mb <= 0 {
		t.Skip("KV_BACKUP_BENCH_MB is not set: this measures backups of that many MB")
	}
	var s3 *testutil.S3
	if os.Getenv(testutil.EnvWeed) != "" {
		s3 = testutil.StartS3(t)
	}
	dir := t.TempDir()
	src := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "src"), "--bootstrap", "always", "--node-id", "src")
	src.waitReady(http.DefaultClient)
	n := mb * 1000
	start := time.Now()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				req, _ := http.NewRequest("PUT", src.url(fmt.Sprintf("/v1/key/k%08d", i)), strings.NewReader(benchValue(i)))
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 201 && resp.StatusCode != 200 {
						err = fmt.Errorf("PUT: %s", resp.Status)
					}
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d keys of 1 KiB in %v", n, time.Since(start).Round(time.Second))

	type target struct {
		name, loc  string
		env, flags []string
	}
	targets := []target{{name: "directory", loc: "file://" + filepath.Join(dir, "backups", "src-20260101000000"+backup.FileExt)}}
	if s3 != nil {
		targets = append(targets, target{name: "seaweedfs", loc: "s3://" + s3.Bucket + "/src-20260101000000" + backup.FileExt,
			env:   []string{backup.EnvS3AccessKeyID + "=" + s3.AccessKey, backup.EnvS3SecretAccessKey + "=" + s3.SecretKey},
			flags: []string{"--s3-endpoint", s3.Endpoint}})
	}
	for _, tg := range targets {
		start := time.Now()
		run := runJob(t, tg.env, append([]string{"backup", "--server", src.url(""), "--to", tg.loc}, tg.flags...)...)
		res := run.ok(t)
		took := time.Since(start)
		t.Logf("%s: backup of %d keys, %.0f MB: %v (%.0f MB/s), peak RSS %d MiB", tg.name, res.Keys, float64(res.Size)/1e6, took.Round(10*time.Millisecond), float64(res.Size)/1e6/took.Seconds(), run.maxRSS>>10)
		if res.Keys != uint64(n) {
			t.Fatalf("%d keys in the backup, want %d", res.Keys, n)
		}

		r := restored{dataDir: filepath.Join(dir, "restored-"+tg.name), peer: freeAddr(t)}
		start = time.Now()
		run = runJob(t, tg.env, append(restoreArgs(tg.loc, r), tg.flags...)...)
		run.ok(t)
		took = time.Since(start)
		t.Logf("%s: restore: %v (%.0f MB/s), peak RSS %d MiB", tg.name, took.Round(10*time.Millisecond), float64(res.Size)/1e6/took.Seconds(), run.maxRSS>>10)

		start = time.Now()
		p := launch(t, nil, "--listen", "127.0.0.1:0", "--data-dir", r.dataDir, "--bootstrap", "never", "--node-id", "n0", "--peer-listen", r.peer, "--peer-advertise", r.peer)
		p.waitReady(http.DefaultClient)
		t.Logf("%s: kvnode on the restored volume ready in %v", tg.name, time.Since(start).Round(10*time.Millisecond))
		for i := 0; i < n; i += max(1, n/1000) {
			k := fmt.Sprintf("k%08d", i)
			if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k), ""); code != 200 || body != benchValue(i) {
				t.Fatalf("restored %s = %d (%d bytes)", k, code, len(body))
			}
		}
		p.signal(syscall.SIGTERM)
		p.wait(60 * time.Second)
		_ = os.RemoveAll(r.dataDir)
	}
}
