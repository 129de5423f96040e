package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// jobRun is one `kvnode backup` or `kvnode restore`.
type jobRun struct {
	code   int
	res    backup.Result
	stdout string
	stderr string
	// maxRSS is the process's peak resident memory, in KiB.
	maxRSS int64
}

// runJob runs kvnode with args (a subcommand first) and env added to the
// test's environment, and parses the Result it prints.
func runJob(t *testing.T, env []string, args ...string) jobRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvnodeBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("kvnode %v still running after 5m:\n%s", args, stderr.String())
	}
	r := jobRun{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &r.res) != nil {
		t.Fatalf("kvnode %v: stdout is not one JSON result:\n%s\nstderr:\n%s", args, r.stdout, r.stderr)
	}
	return r
}

// ok fails the test unless the job succeeded.
func (r jobRun) ok(t *testing.T) backup.Result {
	t.Helper()
	if r.code != 0 || r.res.Error != "" {
		t.Fatalf("exit %d, result %+v\nstderr:\n%s", r.code, r.res, r.stderr)
	}
	return r.res
}

// failed fails the test unless the job failed with an error containing
// want.
func (r jobRun) failed(t *testing.T, want string) {
	t.Helper()
	if r.code == 0 || !strings.Contains(r.res.Error, want) || strings.Contains(r.res.Error, "\n") {
		t.Fatalf("exit %d, error %q: want a failure that says %q\nstderr:\n%s", r.code, r.res.Error, want, r.stderr)
	}
}

// freeAddr is a loopback address nothing listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// source is a running store that backup jobs read from.
type source struct {
	p               *proc
	client          *http.Client
	ca, cert, key   string
	want            map[string]string
	clusterID       string
	dataDir, server string
}

// startSource starts a single kvnode with TLS (the backup job then uses
// the admin certificate, as in a cluster) holding n keys.
func startSource(t *testing.T, n int) *source {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("cluster", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issue(t, ca, dir, "tls", certs.Leaf{CommonName: "kv", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Lifetime: time.Hour})
	issue(t, ca, dir, "admin", certs.Leaf{CommonName: "kvstore-admin", Client: true, Lifetime: time.Hour})
	s := &source{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "admin.crt"), key: filepath.Join(dir, "admin.key"), want: map[string]string{}, dataDir: filepath.Join(dir, "data")}
	s.p = launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", s.dataDir, "--bootstrap", "always", "--node-id", "src",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ca", s.ca)
	client, err := adminClient(s.ca, s.cert, s.key)
	if err != nil {
		t.Fatal(err)
	}
	s.client = client
	s.p.waitReady(client)
	s.server = s.p.url("")
	for i := range n {
		k, v := fmt.Sprintf("k%05d", i), fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%50))
		if code, body := request(t, client, "PUT", s.p.url("/v1/key/"+k), v); code != 201 {
			t.Fatalf("PUT %s = %d %s", k, code, body)
		}
		s.want[k] = v
	}
	var c clusterapi.Cluster
	code, body := request(t, client, "GET", s.p.url(clusterapi.PathCluster), "")
	if code != 200 || json.Unmarshal([]byte(body), &c) != nil {
		t.Fatalf("GET %s = %d %s", clusterapi.PathCluster, code, body)
	}
	s.clusterID = c.ClusterID
	return s
}

// backupArgs are a backup job's arguments for s, to location to.
func (s *source) backupArgs(to string, more ...string) []string {
	return append([]string{"backup", "--server", s.server, "--ca", s.ca, "--cert", s.cert, "--key", s.key, "--to", to}, more...)
}

// restored is a data directory a restore job wrote, and the peer address
// it was told.
type restored struct{ dataDir, peer string }

func restoreArgs(from string, r restored, more ...string) []string {
	return append([]string{"restore", "--from", from, "--data-dir", r.dataDir, "--node-id", "n0", "--peer-advertise", r.peer}, more...)
}

// serve starts kvnode on a restored data directory as the operator's pod
// would: it may not bootstrap, and has the node ID and the peer address
// the restore was told. It checks that the node holds every key of want
// under a cluster ID other than notID, and returns it.
func (r restored) serve(t *testing.T, want map[string]string, notID string) *proc {
	t.Helper()
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--data-dir", r.dataDir, "--bootstrap", "never", "--node-id", "n0", "--peer-listen", r.peer, "--peer-advertise", r.peer)
	p.waitReady(http.DefaultClient)
	for k, v := range want {
		if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k), ""); code != 200 || body != v {
			t.Fatalf("restored %s = %d %q, want %q", k, code, body, v)
		}
	}
	code, body := request(t, http.DefaultClient, "GET", p.url("/v1/keys"), "")
	if code != 200 {
		t.Fatalf("GET /v1/keys = %d %s", code, body)
	}
	if id := clusterID(t, p); id == "" || id == notID {
		t.Fatalf("restored cluster ID %q, the backup's %q: want a new one", id, notID)
	}
	if code, body := request(t, http.DefaultClient, "PUT", p.url("/v1/key/after-restore"), "y"); code != 201 {
		t.Fatalf("PUT on the restored store = %d %s", code, body)
	}
	return p
}

func stop(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("kvnode exited %d\n%s", code, p.output())
	}
}

// entries lists the files in dir, recursively, with a hash of their
// contents: what a no-op must not change. (Opening the storage touches
// modification times.)
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		out = append(out, fmt.Sprintf("%s %x", path, sha256.Sum256(b)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// noRaftState fails the test when dir holds a snapshot or the restore's
// temporary copy. (That it holds no log entries either is shown by a
// restore into it succeeding afterwards.)
func noRaftState(t *testing.T, dir string) {
	t.Helper()
	if e, _ := os.ReadDir(filepath.Join(dir, "snapshots", "snapshots")); len(e) > 0 {
		t.Fatalf("%s holds snapshots: %v", dir, e)
	}
	if _, err := os.Stat(filepath.Join(dir, downloadName)); err == nil {
		t.Fatalf("%s still holds the restore's copy of the backup", dir)
	}
}

// A backup job writes a checked backup of a running store (over TLS, with
// the admin certificate) to a directory and reports it; a restore job
// makes a data directory from it offline, on which kvnode starts as a
// new cluster with every key. Running that restore again is a no-op that
// succeeds; a restore onto a volume with other data is refused.
func TestBackupJobAndRestoreJobWithADirectory(t *testing.T) {
	s := startSource(t, 500)
	dir := t.TempDir()
	file := filepath.Join(dir, "backups", "src-20260101000000"+backup.FileExt)
	resultFile := filepath.Join(dir, "result.json")
	res := runJob(t, nil, s.backupArgs("file://"+file, "--result-file", resultFile)...).ok(t)

	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	hdr, sum, err := backup.Verify(f)
	f.Close()
	st, _ := os.Stat(file)
	if err != nil || res.SHA256 != sum || res.Keys != 500 || hdr.Keys != 500 || res.ClusterID != s.clusterID || res.Index != hdr.Index || res.Term != hdr.Term ||
		res.Size != st.Size() || !res.CreatedAt.Equal(hdr.CreatedAt) || res.Location != "file://"+file {
		t.Fatalf("result %+v, file %+v %s %v", res, hdr, sum, err)
	}
	if b, _ := os.ReadFile(resultFile); !bytes.Equal(bytes.TrimSpace(b), mustJSON(t, res)) {
		t.Fatalf("result file %q, stdout's %q", b, mustJSON(t, res))
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "backups", ".*")); len(tmp) > 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}

	r := restored{dataDir: filepath.Join(dir, "restored"), peer: freeAddr(t)}
	rres := runJob(t, nil, restoreArgs("file://"+file, r, "--result-file", resultFile)...).ok(t)
	if rres.SHA256 != sum || rres.Keys != 500 || rres.ClusterID != s.clusterID || rres.Index != hdr.Index || rres.Size != st.Size() {
		t.Fatalf("restore result %+v", rres)
	}
	noTemp := filepath.Join(r.dataDir, downloadName)
	if _, err := os.Stat(noTemp); err == nil {
		t.Fatal("the restore left its copy of the backup")
	}
	p := r.serve(t, s.want, s.clusterID)
	stop(t, p)

	// The Job again, after its pod was restarted: nothing to do.
	before := entries(t, r.dataDir)
	again := runJob(t, nil, restoreArgs("file://"+file, r)...).ok(t)
	if again.SHA256 != sum || again.Index != hdr.Index {
		t.Fatalf("the second restore's result %+v", again)
	}
	if after := entries(t, r.dataDir); !slices.Equal(before, after) {
		var changed []string
		for _, e := range after {
			if !slices.Contains(before, e) {
				changed = append(changed, e)
			}
		}
		t.Fatalf("a restore that was done changed the data directory: %v", changed)
	}
	p = r.serve(t, s.want, s.clusterID)
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/after-restore"), ""); code != 200 || body != "y" {
		t.Fatalf("a write after the restore, after a second restore job = %d %q", code, body)
	}
	stop(t, p)

	// Another backup onto the restored volume, and any backup onto the
	// source's: refused, without fetching it.
	code, body := request(t, s.client, "PUT", s.p.url("/v1/key/k00000"), "changed")
	if code != 201 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	other := filepath.Join(dir, "backups", "src-20260101000001"+backup.FileExt)
	otherRes := runJob(t, nil, s.backupArgs("file://"+other)...).ok(t)
	// A name used twice is refused: the first backup stays.
	runJob(t, nil, s.backupArgs("file://"+other)...).failed(t, "backups are never overwritten")
	if again := runJob(t, nil, restoreArgs("file://"+other, restored{dataDir: filepath.Join(dir, "probe"), peer: r.peer}, "--expect-sha256", otherRes.SHA256)...).ok(t); again.SHA256 != otherRes.SHA256 {
		t.Fatalf("the first backup was replaced: %s, want %s", again.SHA256, otherRes.SHA256)
	}
	runJob(t, nil, restoreArgs("file://"+other, r)...).failed(t, "was restored from another backup")
	// The restored volume asked to hold another file's restore: refused.
	runJob(t, nil, restoreArgs("file://"+file, r, "--expect-sha256", otherRes.SHA256)...).failed(t, "holds a restore of a file with SHA-256")
	stop(t, s.p)
	runJob(t, nil, restoreArgs("file://"+file, restored{dataDir: s.dataDir, peer: r.peer})...).failed(t, "already holds Raft state")
	if _, err := os.Stat(filepath.Join(s.dataDir, downloadName)); err == nil {
		t.Fatal("a refused restore fetched the backup")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A damaged backup, a truncated one, something that is no backup, and a
// backup of a format version this kvnode does not read are refused by
// the restore job, with an error that says so, and leave the data
// directory without Raft state: the good backup restores into it after.
func TestRestoreJobRefusesDamagedBackups(t *testing.T) {
	s := startSource(t, 300)
	dir := t.TempDir()
	good := filepath.Join(dir, "good"+backup.FileExt)
	runJob(t, nil, s.backupArgs("file://"+good)...).ok(t)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// Version 2: a header this kvnode must not guess at.
	js := []byte(`{"formatVersion":2,"clusterID":"c","index":1,"term":1,"keys":0,"snapshotBytes":0,"createdAt":"2026-01-01T00:00:00Z"}`)
	v2 := append([]byte("KVBACKUP"), binary.BigEndian.AppendUint32(nil, uint32(len(js)))...)
	v2 = append(v2, js...)
	r := restored{dataDir: filepath.Join(dir, "data"), peer: freeAddr(t)}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"flipped", func() []byte { c := bytes.Clone(b); c[len(c)/2] ^= 0x40; return c }(), "corrupt"},
		{"truncated", b[:len(b)*2/3], "truncated"},
		{"not", []byte("PUT a=1\nPUT b=2\n"), "not a kvnode backup"},
		{"v2", v2, "format version 2"},
	} {
		path := filepath.Join(dir, c.name+backup.FileExt)
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		run := runJob(t, nil, restoreArgs("file://"+path, r)...)
		run.failed(t, c.want)
		if !strings.Contains(run.res.Error, path) {
			t.Errorf("a %s backup: the error does not name it: %s", c.name, run.res.Error)
		}
		noRaftState(t, r.dataDir)
	}
	// A valid backup, but not the one recorded: refused before anything
	// is written.
	runJob(t, nil, restoreArgs("file://"+good, r, "--expect-sha256", strings.Repeat("ab", 32))...).failed(t, "it was replaced since; nothing was restored")
	noRaftState(t, r.dataDir)
	runJob(t, nil, restoreArgs("file://"+good, r)...).ok(t)
	stop(t, s.p)
	p := r.serve(t, s.want, s.clusterID)
	stop(t, p)
}

// Retention keeps the newest --keep backups whose names have the prefix,
// deletes older ones, and touches nothing else in the directory.
func TestBackupJobRetention(t *testing.T) {
	s := startSource(t, 10)
	dir := t.TempDir()
	others := []string{"other-20250101000000" + backup.FileExt, "src-notes.txt", "src-" + "x.kvbackup.bak"}
	for _, n := range others {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for i := range 4 {
		name := fmt.Sprintf("src-2026010100000%d%s", i, backup.FileExt)
		names = append(names, name)
		res := runJob(t, nil, s.backupArgs("file://"+filepath.Join(dir, name), "--keep", "2", "--keep-prefix", "src-")...).ok(t)
		if want := max(0, i+1-2) - max(0, i-2); res.Pruned != want {
			t.Fatalf("backup %d pruned %d, want %d", i, res.Pruned, want)
		}
	}
	var got []string
	e, _ := os.ReadDir(dir)
	for _, f := range e {
		got = append(got, f.Name())
	}
	want := append(slices.Clone(others), names[2:]...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after retention: %v, want %v", got, want)
	}
}

// A stream that does not check out leaves nothing at the location: a
// server whose backup is damaged in the middle, and one whose trailer
// names another checksum.
func TestBackupJobRefusesABadStream(t *testing.T) {
	s := startSource(t, 100)
	dir := t.TempDir()
	good := filepath.Join(dir, "good"+backup.FileExt)
	res := runJob(t, nil, s.backupArgs("file://"+good)...).ok(t)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(b)
	flipped[len(b)/2] ^= 1
	for _, c := range []struct {
		name, trailer string
		body          []byte
		want          string
	}{
		{"flipped", res.SHA256, flipped, "checksum mismatch"},
		{"trailer", strings.Repeat("0", 64), b, "the server's checksum"},
		{"no trailer", "", b, "no " + backup.TrailerSHA256 + " trailer"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", backup.TrailerSHA256)
			_, _ = w.Write(c.body)
			if c.trailer != "" {
				w.Header().Set(backup.TrailerSHA256, c.trailer)
			}
		}))
		to := filepath.Join(dir, "bad", "x"+backup.FileExt)
		runJob(t, nil, "backup", "--server", srv.URL, "--to", "file://"+to).failed(t, c.want)
		srv.Close()
		if e, _ := os.ReadDir(filepath.Dir(to)); len(e) > 0 {
			t.Fatalf("%s: a failed backup left %v", c.name, e)
		}
	}
}

// The same with S3 (SeaweedFS): a backup job uploads a checked backup,
// retention works on the prefix and leaves other names and deeper keys
// alone, a restore job fetches it and kvnode starts from it with every
// key. A bad stream leaves no object; a damaged object is refused; wrong
// credentials fail with an error that says so and holds no secret.
func TestBackupJobAndRestoreJobWithS3(t *testing.T) {
	s3 := testutil.StartS3(t)
	s := startSource(t, 500)
	mc := s3.Client(t)
	ctx := context.Background()
	env := []string{backup.EnvS3AccessKeyID + "=" + s3.AccessKey, backup.EnvS3SecretAccessKey + "=" + s3.SecretKey}
	s3Flags := []string{"--s3-endpoint", s3.Endpoint}
	loc := func(key string) string { return "s3://" + s3.Bucket + "/" + key }
	for _, key := range []string{"prod/other-20250101000000" + backup.FileExt, "prod/sub/src-20250101000000" + backup.FileExt} {
		if _, err := mc.PutObject(ctx, s3.Bucket, key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var results []backup.Result
	for i := range 3 {
		args := s.backupArgs(loc(fmt.Sprintf("prod/src-2026010100000%d%s", i, backup.FileExt)), append(s3Flags, "--keep", "2", "--keep-prefix", "src-")...)
		results = append(results, runJob(t, env, args...).ok(t))
	}
	if results[2].Pruned != 1 || results[1].Pruned != 0 {
		t.Fatalf("pruned %d and %d, want 0 and 1", results[1].Pruned, results[2].Pruned)
	}
	var keys []string
	for obj := range mc.ListObjects(ctx, s3.Bucket, minio.ListObjectsOptions{Prefix: "prod/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	want := []string{"prod/other-20250101000000" + backup.FileExt, "prod/src-20260101000001" + backup.FileExt, "prod/src-20260101000002" + backup.FileExt, "prod/sub/src-20250101000000" + backup.FileExt}
	if !slices.Equal(keys, want) {
		t.Fatalf("after retention: %v, want %v", keys, want)
	}
	obj, err := mc.GetObject(ctx, s3.Bucket, "prod/src-20260101000001"+backup.FileExt, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	if hdr, sum, err := backup.Verify(bytes.NewReader(b)); err != nil || sum != results[1].SHA256 || hdr.Keys != 500 || int64(len(b)) != results[1].Size {
		t.Fatalf("the object: %+v %s %v; the result %+v", hdr, sum, err, results[1])
	}

	r := restored{dataDir: filepath.Join(t.TempDir(), "restored"), peer: freeAddr(t)}
	rres := runJob(t, env, restoreArgs(loc("prod/src-20260101000001"+backup.FileExt), r, s3Flags...)...).ok(t)
	if rres.SHA256 != results[1].SHA256 || rres.Keys != 500 || rres.ClusterID != s.clusterID {
		t.Fatalf("restore result %+v", rres)
	}
	stop(t, r.serve(t, s.want, s.clusterID))

	// A damaged object.
	b[len(b)/2] ^= 0x40
	if _, err := mc.PutObject(ctx, s3.Bucket, "bad/flipped"+backup.FileExt, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	empty := restored{dataDir: filepath.Join(t.TempDir(), "empty"), peer: freeAddr(t)}
	runJob(t, env, restoreArgs(loc("bad/flipped"+backup.FileExt), empty, s3Flags...)...).failed(t, "corrupt")
	noRaftState(t, empty.dataDir)

	// A stream that does not check out: no object. It is larger than a
	// part, so that parts are uploaded before the end shows it bad.
	var buf bytes.Buffer
	bw, err := backup.NewWriter(&buf, backup.Header{ClusterID: "c", Index: 1, Term: 1, SnapshotBytes: 20 << 20, CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write(make([]byte, 20<<20)); err != nil || bw.Close() != nil {
		t.Fatal(err)
	}
	big := buf.Bytes()
	big[len(big)-41] ^= 1 // the snapshot's last byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(big)
	}))
	defer srv.Close()
	runJob(t, env, append([]string{"backup", "--server", srv.URL, "--to", loc("bad/stream" + backup.FileExt)}, s3Flags...)...).failed(t, "corrupt")
	if _, err := mc.StatObject(ctx, s3.Bucket, "bad/stream"+backup.FileExt, minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("a failed upload left an object: %v", err)
	}

	// Wrong credentials, for a backup and a restore.
	wrongSecret := "wrong" + s3.SecretKey[5:]
	for _, bad := range [][]string{
		{backup.EnvS3AccessKeyID + "=" + s3.AccessKey, backup.EnvS3SecretAccessKey + "=" + wrongSecret},
		{backup.EnvS3AccessKeyID + "=nosuchkey", backup.EnvS3SecretAccessKey + "=" + s3.SecretKey},
	} {
		for _, run := range []jobRun{
			runJob(t, bad, s.backupArgs(loc("prod/src-20260101000009"+backup.FileExt), s3Flags...)...),
			runJob(t, bad, restoreArgs(loc("prod/src-20260101000002"+backup.FileExt), empty, s3Flags...)...),
		} {
			run.failed(t, "HTTP 403")
			t.Logf("kvnode %s with wrong credentials: %s", run.res.Location, run.res.Error)
			for _, secret := range []string{wrongSecret, s3.SecretKey} {
				if strings.Contains(run.stdout+run.stderr, secret) {
					t.Fatalf("the output holds a secret key:\n%s\n%s", run.stdout, run.stderr)
				}
			}
		}
	}
	noRaftState(t, empty.dataDir)
}
