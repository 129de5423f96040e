// Package harness runs a kvnode cluster of real processes on loopback for
// tests and for a person (hack/cluster-local): N kvnode processes with
// HTTPS, mutual-TLS peer traffic and an admin client certificate, each
// behind a fault-injecting TCP proxy on its peer port, so that a test can
// kill, restart and partition members.
//
// Member i binds 127.0.0.(10+i). Peers dial from their own address, so a
// proxy knows which member a connection comes from and can cut single
// links. Nothing leaves the loopback interface.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// AdminCN is the common name of the admin client certificate.
const AdminCN = "kvstore-admin"

// Options configure a cluster.
type Options struct {
	// Binary is the kvnode binary.
	Binary string
	// Dir holds each member's data, certificates and log.
	Dir string
	// ExtraArgs are appended to every member's command line.
	ExtraArgs []string
	// Output, if set, receives every member's log lines, prefixed.
	Output io.Writer
	// Insecure runs the API over plain HTTP and peer traffic over plain TCP
	// (for benchmarks against servers that run without TLS).
	Insecure bool
	// NoProxies advertises the members' own peer listeners, without the
	// fault-injecting proxies (for benchmarks: no extra copy of peer
	// traffic). Proxy.Cut then has no effect.
	NoProxies bool
	// Profiles has each member serve Go's profiles (--pprof-listen) on
	// Member.Pprof.
	Profiles bool
	// Postgres, when set, runs the members in Postgres mode
	// (--log=postgres) with these TLOG_* variables added to their
	// environment: no peers, no data directory, nothing to bootstrap.
	Postgres []string
}

// Cluster is a set of kvnode processes and their proxies.
type Cluster struct {
	opts   Options
	CA     *certs.CA
	Client *http.Client // trusts the CA
	Admin  *http.Client // presents the admin certificate
	// Peer presents a peer certificate of the cluster, the identity the
	// members' internal API (clusterapi.PathInternal) requires.
	Peer    *http.Client
	mu      sync.Mutex
	members []*Member
}

// Member is one kvnode process slot: it keeps its identity, addresses
// and data directory across restarts.
type Member struct {
	c     *Cluster
	Index int
	ID    string
	IP    string
	API   string // https://ip:port
	GRPC  string // ip:port of the gRPC API, with API's TLS
	// Pprof is ip:port of the member's profiles, with Options.Profiles.
	Pprof string
	// Args are extra flags for this member only, after Options.ExtraArgs.
	Args     []string
	PeerAddr string // the proxy, as advertised
	peerReal string // the process's own peer listener
	DataDir  string
	certDir  string
	proxy    *Proxy

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	logMu  sync.Mutex // not mu: Start holds mu while the process logs
	logs   *bytes.Buffer
	paused bool
}

// New creates the cluster's CA and clients; members are added with Add.
func New(opts Options) (*Cluster, error) {
	ca, err := certs.NewCA("kvstore test CA", 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, CA: ca}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c.Client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}
	adminCert, adminKey, err := ca.Issue(certs.Leaf{CommonName: AdminCN, Client: true, Lifetime: 24 * time.Hour}, time.Now())
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(adminCert, adminKey)
	if err != nil {
		return nil, err
	}
	c.Admin = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	peerCert, peerKey, err := ca.Issue(certs.Leaf{CommonName: "harness-peer", Server: true, Client: true, Lifetime: 24 * time.Hour}, time.Now())
	if err != nil {
		return nil, err
	}
	if pair, err = tls.X509KeyPair(peerCert, peerKey); err != nil {
		return nil, err
	}
	c.Peer = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	if opts.Insecure {
		c.Client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		c.Admin = c.Client
		c.Peer = c.Client
	}
	return c, nil
}

// Members returns the member slots.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Member returns member i.
func (c *Cluster) Member(i int) *Member { return c.Members()[i] }

// Add creates the next member slot (addresses, certificates, proxy)
// without starting it.
func (c *Cluster) Add() (*Member, error) {
	c.mu.Lock()
	i := len(c.members)
	c.mu.Unlock()
	ip := fmt.Sprintf("127.0.0.%d", 10+i)
	m := &Member{c: c, Index: i, ID: fmt.Sprintf("kv-%d", i), IP: ip, DataDir: filepath.Join(c.opts.Dir, fmt.Sprintf("kv-%d", i), "data"), certDir: filepath.Join(c.opts.Dir, fmt.Sprintf("kv-%d", i), "certs"), logs: &bytes.Buffer{}}
	// The ports are held together, and the proxy takes its own
	// while they are held, so that no two of them are the same port.
	ports, release, err := freePorts(ip, 4)
	if err != nil {
		return nil, err
	}
	apiPort, realPort, grpcPort := ports[0], ports[1], ports[2]
	m.GRPC = fmt.Sprintf("%s:%d", ip, grpcPort)
	if c.opts.Profiles {
		m.Pprof = fmt.Sprintf("%s:%d", ip, ports[3])
	}
	m.API = fmt.Sprintf("https://%s:%d", ip, apiPort)
	if c.opts.Insecure {
		m.API = fmt.Sprintf("http://%s:%d", ip, apiPort)
	}
	m.peerReal = fmt.Sprintf("%s:%d", ip, realPort)
	m.proxy, err = NewProxy(ip+":0", m.peerReal, c.memberOf)
	release()
	if err != nil {
		return nil, err
	}
	m.PeerAddr = m.proxy.Addr()
	if c.opts.NoProxies {
		m.PeerAddr = m.peerReal
	}
	if err := os.MkdirAll(m.certDir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	for _, f := range []struct {
		name string
		leaf certs.Leaf
	}{
		{"tls", certs.Leaf{CommonName: m.ID, IPs: []net.IP{net.ParseIP(ip)}, Server: true, Lifetime: 24 * time.Hour}},
		{"peer", certs.Leaf{CommonName: m.ID, IPs: []net.IP{net.ParseIP(ip)}, Server: true, Client: true, Lifetime: 24 * time.Hour}},
	} {
		cert, key, err := c.CA.Issue(f.leaf, now)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(m.certDir, f.name+".crt"), cert, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(m.certDir, f.name+".key"), key, 0o600); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(m.certDir, "ca.crt"), c.CA.CertPEM, 0o600); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	return m, nil
}

// memberOf maps a peer connection's source address to a member index.
func (c *Cluster) memberOf(addr net.Addr) int {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return -1
	}
	for _, m := range c.Members() {
		if m.IP == tcp.IP.String() {
			return m.Index
		}
	}
	return -1
}

// freePorts returns n distinct free ports on ip, held until release.
func freePorts(ip string, n int) ([]int, func(), error) {
	var ls []net.Listener
	release := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	var ports []int
	for range n {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("listen on %s (is the loopback range usable?): %w", ip, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, release, nil
}

// Start runs the member's process and waits until its API answers.
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("%s is already running", m.ID)
	}
	u, _ := url.Parse(m.API)
	cd := m.certDir
	args := []string{
		"--node-id", m.ID,
		"--listen", u.Host,
		"--grpc-listen", m.GRPC,
		"--log-level", "warn",
	}
	pg := m.c.opts.Postgres != nil
	if pg {
		args = append(args, "--log", "postgres")
	} else {
		args = append(args,
			"--api-advertise", m.API,
			"--data-dir", m.DataDir,
			"--peer-listen", m.peerReal,
			"--peer-advertise", m.PeerAddr,
			// A member is added by the cluster's leader (or bootstrapped
			// through the API); one that lost its data directory must not
			// start a second cluster.
			"--bootstrap", clusterapi.BootstrapNever)
	}
	if !m.c.opts.Insecure {
		args = append(args, "--tls-cert", filepath.Join(cd, "tls.crt"), "--tls-key", filepath.Join(cd, "tls.key"), "--tls-ca", filepath.Join(cd, "ca.crt"))
		if !pg {
			args = append(args, "--peer-tls-cert", filepath.Join(cd, "peer.crt"), "--peer-tls-key", filepath.Join(cd, "peer.key"), "--peer-tls-ca", filepath.Join(cd, "ca.crt"))
		}
	}
	if m.Pprof != "" {
		args = append(args, "--pprof-listen", m.Pprof)
	}
	args = append(args, m.c.opts.ExtraArgs...)
	args = append(args, m.Args...)
	cmd := exec.Command(m.c.opts.Binary, args...)
	if pg {
		cmd.Env = append(os.Environ(), m.c.opts.Postgres...)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		pw.Close()
		close(done)
	}()
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := fmt.Sprintf("[%s] %s\n", m.ID, sc.Text())
			m.logMu.Lock()
			m.logs.WriteString(line)
			m.logMu.Unlock()
			if m.c.opts.Output != nil {
				_, _ = io.WriteString(m.c.opts.Output, line)
			}
		}
	}()
	m.cmd, m.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := m.c.Client.Get(m.API + "/livez")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			<-scanned // the last lines are in
			m.logMu.Lock()
			logs := m.logs.String()
			m.logMu.Unlock()
			if i := strings.LastIndex(logs[:max(0, len(logs)-1)], "\n"); i >= 0 {
				logs = logs[i+1:] // its last line says why
			}
			return fmt.Errorf("%s exited during startup: %s", m.ID, strings.TrimSpace(logs))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer on %s", m.ID, m.API)
}

// Pid is the process's ID, 0 when it is not running.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Running reports whether the process is up.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (m *Member) Kill() { m.stop(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for the graceful exit.
func (m *Member) Stop() { m.stop(syscall.SIGTERM) }

func (m *Member) stop(sig syscall.Signal) {
	m.mu.Lock()
	cmd, done, paused := m.cmd, m.done, m.paused
	m.paused = false
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	if paused {
		// A stopped process acts on SIGTERM only once it runs again.
		cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	m.mu.Lock()
	m.cmd = nil
	m.mu.Unlock()
}

// Pause stops the process with SIGSTOP: it keeps its sockets, and what
// peers send it waits in its buffers, to be acted on at Resume, as after
// a long garbage-collection pause or a frozen VM.
func (m *Member) Pause() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && !m.paused {
		m.cmd.Process.Signal(syscall.SIGSTOP)
		m.paused = true
		waitStopped(m.cmd.Process.Pid)
	}
}

// waitStopped waits until every thread of the process has stopped. A
// SIGSTOP sent to a process stops its threads one after the other: under
// load, one of them answered a request a millisecond after kill returned,
// and a test took the answer of a "paused" member.
func waitStopped(pid int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return // gone
		}
		stopped := true
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
			if err != nil {
				continue // the thread has exited
			}
			// The state follows the command name, which is in
			// parentheses and may hold spaces.
			s := string(b)
			i := strings.LastIndexByte(s, ')')
			if i < 0 || i+2 >= len(s) || (s[i+2] != 'T' && s[i+2] != 't') {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
	}
}

// Resume continues a paused process with SIGCONT.
func (m *Member) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && m.paused {
		m.cmd.Process.Signal(syscall.SIGCONT)
		m.paused = false
	}
}

// Paused reports whether the process is paused.
func (m *Member) Paused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}

// WipeData deletes the member's data directory (a lost volume).
func (m *Member) WipeData() error { return os.RemoveAll(m.DataDir) }

// Logs returns what the member has printed.
func (m *Member) Logs() string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return m.logs.String()
}

// Proxy is the member's fault-injecting peer proxy.
func (m *Member) Proxy() *Proxy { return m.proxy }

// AdminDo sends a membership API call to the member and decodes a JSON
// answer into out (when non-nil). Redirects to the leader are followed.
func (c *Cluster) AdminDo(ctx context.Context, m *Member, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, m.API+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.Admin.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return &AdminError{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Transfer asks via (redirected to the leader) to hand leadership to the
// member id, or to any voter when id is empty, and returns the status and
// body of the answer, whatever the status.
func (c *Cluster) Transfer(ctx context.Context, via *Member, id string) (int, string, error) {
	b, _ := json.Marshal(clusterapi.TransferRequest{ID: id})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, via.API+clusterapi.PathLeader, bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Admin.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// AdminError is a non-200 answer of the membership API.
type AdminError struct {
	Status  int
	Message string
}

func (e *AdminError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

// Retry calls f until it succeeds or ctx ends, returning the last error.
func Retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Bootstrap starts member 0 as a new cluster and waits for it to lead.
func (c *Cluster) Bootstrap(ctx context.Context) error {
	m := c.Member(0)
	if err := c.AdminDo(ctx, m, http.MethodPost, clusterapi.PathBootstrap, nil, nil); err != nil {
		return err
	}
	return Retry(ctx, func() error {
		var info clusterapi.Cluster
		if err := c.AdminDo(ctx, m, http.MethodGet, clusterapi.PathCluster, nil, &info); err != nil {
			return err
		}
		if info.Leader == "" || info.ClusterID == "" {
			return errors.New("no leader or cluster ID yet")
		}
		return nil
	})
}

// Join adds a running member as a non-voter (through any running member),
// then promotes it to voter once it has caught up; voter=false leaves it a
// read replica.
func (c *Cluster) Join(ctx context.Context, m *Member, voter bool) error {
	via := c.anyRunning(m)
	if via == nil {
		return errors.New("no running member to join through")
	}
	add := clusterapi.AddMemberRequest{ID: m.ID, Address: m.PeerAddr, API: m.API}
	if err := Retry(ctx, func() error { return c.AdminDo(ctx, via, http.MethodPost, clusterapi.PathMembers, add, nil) }); err != nil {
		return fmt.Errorf("add %s: %w", m.ID, err)
	}
	if !voter {
		return nil
	}
	return Retry(ctx, func() error {
		return c.AdminDo(ctx, via, http.MethodPost, clusterapi.MemberPath(clusterapi.PathPromote, m.ID), nil, nil)
	})
}

// Remove takes m out of the cluster through another running member.
func (c *Cluster) Remove(ctx context.Context, m *Member) error {
	via := c.anyRunning(m)
	if via == nil {
		return errors.New("no running member")
	}
	return Retry(ctx, func() error {
		return c.AdminDo(ctx, via, http.MethodDelete, clusterapi.MemberPath(clusterapi.PathMember, m.ID), nil, nil)
	})
}

// Info asks any running member for the cluster view.
func (c *Cluster) Info(ctx context.Context) (clusterapi.Cluster, error) {
	var info clusterapi.Cluster
	via := c.anyRunning(nil)
	if via == nil {
		return info, errors.New("no running member")
	}
	err := c.AdminDo(ctx, via, http.MethodGet, clusterapi.PathCluster, nil, &info)
	return info, err
}

func (c *Cluster) anyRunning(not *Member) *Member {
	for _, m := range c.Members() {
		if m != not && m.Running() && !m.Paused() {
			return m
		}
	}
	return nil
}

// StartN adds, starts and joins n voters (in Postgres mode: starts n
// nodes, which need no joining).
func (c *Cluster) StartN(ctx context.Context, n int) error {
	for i := 0; i < n; i++ {
		m, err := c.Add()
		if err != nil {
			return err
		}
		if err := m.Start(); err != nil {
			return err
		}
		if c.opts.Postgres != nil {
			continue
		}
		if i == 0 {
			if err := c.Bootstrap(ctx); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			continue
		}
		if err := c.Join(ctx, m, true); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every member and proxy.
func (c *Cluster) Close() {
	for _, m := range c.Members() {
		m.Kill()
		m.proxy.Close()
	}
}

// DumpLogs writes every member's output to w.
func (c *Cluster) DumpLogs(w io.Writer) {
	for _, m := range c.Members() {
		_, _ = io.WriteString(w, m.Logs())
	}
}

// AdminLeaf describes the admin client certificate.
func AdminLeaf() certs.Leaf {
	return certs.Leaf{CommonName: AdminCN, Client: true, Lifetime: 24 * time.Hour}
}

// BuildKvnode compiles cmd/kvnode into dir and returns the binary's path.
// repoRoot is the repository's top directory, relative to the caller.
func BuildKvnode(repoRoot, dir string) (string, error) {
	bin := filepath.Join(dir, "kvnode")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kvnode")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kvnode: %v\n%s", err, out)
	}
	return bin, nil
}
