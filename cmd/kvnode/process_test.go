package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

var kvnodeBin, kvctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvnode-bin")
	if err != nil {
		panic(err)
	}
	kvnodeBin = filepath.Join(dir, "kvnode")
	if out, err := exec.Command("go", "build", "-o", kvnodeBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build kvnode: %v\n%s", err, out)
		os.Exit(1)
	}
	// Every node these tests start serves gRPC on a port of its own, not
	// on the default :50051 that nodes started at once would share.
	if err := os.Setenv("KV_GRPC_LISTEN", "127.0.0.1:0"); err != nil {
		panic(err)
	}
	// kvctl too: TestKvctl drives a real node with it.
	kvctlBin = filepath.Join(dir, "kvctl")
	if out, err := exec.Command("go", "build", "-o", kvctlBin, "../kvctl").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build kvctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a kvnode process started by a test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	scheme string
	// grpcAddr is where the node serves gRPC (logged before addr).
	grpcAddr string
	done     chan error
	logs     *bytes.Buffer
	logMu    *sync.Mutex
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// start runs a single-node kvnode on dataDir with args and waits until it
// serves and is ready.
func start(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	args = append([]string{"--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", dataDir, "--bootstrap", "always", "--node-id", "n0"}, args...)
	p := launch(t, nil, args...)
	p.waitReady(http.DefaultClient)
	return p
}

// launch runs kvnode with exactly args (and env, when not nil, as its whole
// environment) and waits until it listens.
func launch(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(kvnodeBin, args...)
	cmd.Env = env
	if env != nil {
		cmd.Env = append(slices.Clip(env), "KV_GRPC_LISTEN=127.0.0.1:0")
	}
	pr, pw := io.Pipe()
	p := &proc{t: t, cmd: cmd, done: make(chan error, 1), logs: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	cmd.Stdout = pw
	cmd.Stderr = syncWriter{p.logMu, p.logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	listening := make(chan struct{ addr, scheme, grpc string }, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		grpcAddr := ""
		for sc.Scan() {
			line := sc.Bytes()
			p.logMu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.logMu.Unlock()
			var rec struct{ Msg, Addr, Scheme string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "kvnode gRPC listening" {
				grpcAddr = rec.Addr
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "kvnode listening" {
				listening <- struct{ addr, scheme, grpc string }{rec.Addr, rec.Scheme, grpcAddr}
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done //nolint:errcheck // killed: the error only says so
		}
		if t.Failed() {
			t.Logf("kvnode output:\n%s", p.output())
		}
	})
	select {
	case l := <-listening:
		p.addr, p.scheme, p.grpcAddr = l.addr, l.scheme, l.grpc
	case err := <-p.done:
		t.Fatalf("kvnode exited: %v\n%s", err, p.output())
	case <-time.After(15 * time.Second):
		t.Fatalf("kvnode did not start\n%s", p.output())
	}
	return p
}

func (p *proc) output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.logs.String()
}

func (p *proc) url(path string) string { return p.scheme + "://" + p.addr + path }

func (p *proc) waitReady(c *http.Client) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.Get(p.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("kvnode never became ready\n%s", p.output())
}

func (p *proc) signal(s os.Signal) { p.cmd.Process.Signal(s) }

// wait returns the exit code, failing the test after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done: //nolint:errcheck // a non-zero exit; the exit code says which
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("kvnode still running after %v", timeout)
		return -1
	}
}

// exchange is one request of a session and what it must answer (any body
// when want is empty).
type exchange struct {
	method, path, body string
	code               int
	want               string
}

// session makes the requests in order and fails at the first wrong answer.
func (p *proc) session(t *testing.T, c *http.Client, steps []exchange) {
	t.Helper()
	for _, s := range steps {
		code, body := request(t, c, s.method, p.url(s.path), s.body)
		if code != s.code || (s.want != "" && body != s.want) {
			t.Fatalf("%s %s = %d %q, want %d %q", s.method, s.path, code, body, s.code, s.want)
		}
	}
}

func request(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The book's curl session against a real process, then a restart: the
// data is on disk, not in memory.
func TestProcessBookSessionAndRestart(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	c := http.DefaultClient
	p.session(t, c, []exchange{
		{"PUT", "/v1/key-a", "Hello, key-value store!", 201, ""},
		{"GET", "/v1/key-a", "", 200, "Hello, key-value store!"},
		{"PUT", "/v1/key/key-b", "multi\nline\tvalue", 201, ""},
		{"GET", "/v1/key-c", "", 404, ""},
		{"POST", "/v1/key-a", "", 405, ""},
		{"PUT", "/v1/key-c", "gone soon", 201, ""},
		{"DELETE", "/v1/key-c", "", 200, ""},
		{"GET", "/livez", "", 200, "ok\n"},
		{"GET", "/readyz", "", 200, "ok\n"},
		{"GET", "/healthz?deep=1", "", 200, "ok\n"},
	})
	_, metrics := request(t, c, "GET", p.url("/metrics"), "")
	for _, m := range []string{`kvnode_http_requests_total{code="201",method="PUT"}`, "kvnode_txlog_fsync_duration_seconds_count", "kvnode_raft_leader 1", "kvnode_raft_applied_index"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if strings.Contains(p.output(), "Hello, key-value store") || strings.Contains(p.output(), "key-a") {
		t.Fatal("a key or value appears in the logs")
	}

	p = start(t, dir)
	for path, want := range map[string]string{"/v1/key-a": "Hello, key-value store!", "/v1/key/key-b": "multi\nline\tvalue"} {
		if code, body := request(t, c, "GET", p.url(path), ""); code != 200 || body != want {
			t.Fatalf("after restart GET %s = %d %q", path, code, body)
		}
	}
	if code, _ := request(t, c, "GET", p.url("/v1/key-c"), ""); code != 404 {
		t.Fatalf("deleted key-c is back: %d", code)
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	out, err := exec.Command(kvnodeBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"--listen", "KV_LISTEN", "--data-dir", "KV_DATA_DIR", "--tls-cert", "KV_TLS_KEY", "--max-value-bytes", "--max-in-flight"} {
		if !bytes.Contains(out, []byte(strings.TrimPrefix(f, "-"))) {
			t.Errorf("--help does not document %s", f)
		}
	}
	cmd := exec.Command(kvnodeBin)
	cmd.Env = append(os.Environ(), "KV_MAX_VALUE_BYTES=lots")
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !bytes.Contains(out, []byte("KV_MAX_VALUE_BYTES")) {
		t.Fatalf("bad env: exit %d (%v), %s", code, err, out)
	}

	// Limits the log could not hold are refused at start: before, such a
	// node started and then failed every large write.
	cmd = exec.Command(kvnodeBin, "--max-value-bytes", "100000000", "--data-dir", t.TempDir())
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !bytes.Contains(out, []byte("--max-value-bytes may be at most")) {
		t.Fatalf("--max-value-bytes above the log's record limit: exit %d (%v), %s", code, err, out)
	}

	// An environment variable configures the node; a flag beats it.
	dir := t.TempDir()
	t.Setenv("KV_MAX_VALUE_BYTES", "4")
	p := start(t, dir)
	if code, _ := request(t, http.DefaultClient, "PUT", p.url("/v1/k"), "12345"); code != 413 {
		t.Fatalf("KV_MAX_VALUE_BYTES=4 ignored: %d", code)
	}
	p.signal(syscall.SIGTERM)
	p.wait(10 * time.Second)
	p = start(t, dir, "--max-value-bytes", "8")
	if code, _ := request(t, http.DefaultClient, "PUT", p.url("/v1/k"), "12345"); code != 201 {
		t.Fatalf("flag did not beat the environment: %d", code)
	}
}

// SIGKILL during concurrent writes: every acknowledged write survives the
// restart, and a write in flight at the kill is either wholly there or
// wholly absent.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	const writers = 16
	type result struct {
		acked    map[string]string
		inflight map[string]string
	}
	results := make([]result, writers)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		results[w] = result{acked: map[string]string{}, inflight: map[string]string{}}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%02d/%06d", w, i)
				val := strings.Repeat(fmt.Sprintf("%s;", key), 1+i%20)
				results[w].inflight[key] = val
				req, _ := http.NewRequest("PUT", p.url("/v1/key/"+key), strings.NewReader(val))
				resp, err := client.Do(req)
				if err != nil {
					return // the process died under us: outcome unknown
				}
				resp.Body.Close()
				if resp.StatusCode == 201 {
					delete(results[w].inflight, key)
					results[w].acked[key] = val
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	cancel()
	wg.Wait()

	p = start(t, dir)
	acked := 0
	for _, r := range results {
		for k, v := range r.acked {
			acked++
			if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k), ""); code != 200 || body != v {
				t.Fatalf("acknowledged write %s lost after SIGKILL: %d %q", k, code, body)
			}
		}
		for k, v := range r.inflight {
			code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k), "")
			if code == 200 && body != v || code != 200 && code != 404 {
				t.Fatalf("write in flight at the kill, %s, is half-applied: %d %q", k, code, body)
			}
		}
	}
	if acked < 100 {
		t.Fatalf("only %d writes acknowledged before the kill: the test proved little", acked)
	}
	t.Logf("%d acknowledged writes survived SIGKILL", acked)
}

// SIGTERM lets an in-flight request finish, then flushes and exits 0; a
// second signal exits at once.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "--drain-delay", "1s")
	// A PUT whose body arrives slowly is in flight when SIGTERM comes.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", p.url("/v1/key/slow"), pr)
	req.ContentLength = 10
	got := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	if code, _ := request(t, http.DefaultClient, "GET", p.url("/readyz"), ""); code != 503 {
		t.Fatalf("/readyz while draining = %d, want 503", code)
	}
	if _, err := pw.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-got; code != 201 {
		t.Fatalf("in-flight PUT = %d, want 201", code)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(p.output(), "transaction log flushed and closed") {
		t.Fatal("no shutdown message")
	}
	p = start(t, dir)
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/slow"), ""); code != 200 || body != "helloworld" {
		t.Fatalf("after restart: %d %q", code, body)
	}

	// A request that never finishes: the second signal must not wait for it.
	pr2, pw2 := io.Pipe()
	defer pw2.Close()
	req2, _ := http.NewRequest("PUT", p.url("/v1/key/stuck"), pr2)
	req2.ContentLength = 10
	go func() {
		if resp, err := http.DefaultClient.Do(req2); err == nil { // the process exits before it answers
			resp.Body.Close()
		}
	}()
	_, _ = pw2.Write([]byte("x"))
	time.Sleep(200 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	if code := p.wait(3 * time.Second); code != 1 {
		t.Fatalf("exit code after a second signal = %d, want 1", code)
	}
}

func writeCert(t *testing.T, ca *certs.CA, dir string) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(certs.Leaf{CommonName: "kvnode", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Lifetime: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Replace both files the way the kubelet updates a Secret volume: write
	// elsewhere, then rename into place.
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := certs.NewReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), "", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Certificate().Leaf
}

// Replacing the certificate files changes the certificate new connections
// see, without a restart; HTTP/2 is negotiated.
func TestTLSReload(t *testing.T) {
	ca, err := certs.NewCA("test-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	first := writeCert(t, ca, certDir)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	newClient := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	}
	p := startTLS(t, certDir, newClient())
	serialSeen := func() (string, int) {
		resp, err := newClient().Get(p.url("/v1/key/k?consistency=stale"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.String(), resp.ProtoMajor
	}
	if s, proto := serialSeen(); s != first.SerialNumber.String() || proto != 2 {
		t.Fatalf("serial %s proto %d, want %s over HTTP/2", s, proto, first.SerialNumber)
	}
	second := writeCert(t, ca, certDir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := serialSeen()
		if s == second.SerialNumber.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %s after the files changed", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The expiry exported is that of the certificate now served: the
	// expiring-certificate alert relies on it.
	_, metrics := request(t, newClient(), "GET", p.url("/metrics"), "")
	want := `kvnode_tls_certificate_not_after_timestamp_seconds{cert="api"} ` + strconv.FormatFloat(float64(second.NotAfter.Unix()), 'g', -1, 64)
	if !strings.Contains(metrics, want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}
	// Plain HTTP is refused on a TLS node.
	if resp, err := http.Get("http://" + p.addr + "/livez"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on a TLS node")
		}
	}
}

func startTLS(t *testing.T, certDir string, c *http.Client) *proc {
	t.Helper()
	// start() probes readiness over plain HTTP; a TLS node needs the TLS client.
	args := []string{"--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--tls-cert", filepath.Join(certDir, "tls.crt"), "--tls-key", filepath.Join(certDir, "tls.key"), "--tls-reload-interval", "100ms"}
	cmd := exec.Command(kvnodeBin, args...)
	out := &bytes.Buffer{}
	mu := &sync.Mutex{}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, syncWriter{mu, out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan error, 1), logs: out, logMu: mu}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done //nolint:errcheck // killed: the error only says so
	})
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		var rec struct{ Msg, Addr, Scheme string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "kvnode listening" {
			p.addr, p.scheme = rec.Addr, rec.Scheme
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if p.scheme != "https" {
		t.Fatalf("scheme %q, want https", p.scheme)
	}
	p.waitReady(c)
	return p
}

// A second kvnode on a data directory that a running one holds must exit
// at once with an error naming the directory, and the first must keep
// serving: two processes appending to one log lose acknowledged writes.
func TestSecondProcessOnTheSameDataDirFails(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	if code, body := request(t, http.DefaultClient, "PUT", p.url("/v1/key/a"), "1"); code != 201 {
		t.Fatalf("PUT = %d %s", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, kvnodeBin, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", dir, "--bootstrap", "always", "--node-id", "n0")
	out, err := second.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the second kvnode on %s was still running after 10s:\n%s", dir, out)
	}
	if err == nil || second.ProcessState.ExitCode() == 0 {
		t.Fatalf("the second kvnode exited 0:\n%s", out)
	}
	for _, want := range []string{dir, "another process"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the second kvnode's error does not name %q:\n%s", want, out)
		}
	}
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/a"), ""); code != 200 || body != "1" {
		t.Fatalf("the first kvnode after the second's attempt: GET = %d %q", code, body)
	}
}
