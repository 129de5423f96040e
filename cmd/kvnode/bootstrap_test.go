package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// withoutKV is the test's environment minus every KV_* variable, so that a
// process started with it is configured by its arguments alone.
func withoutKV(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KV_") })
	return append(env, extra...)
}

// defaultPeerAddressFree skips the test when a node without --peer-listen
// could not bind its peer listener.
func defaultPeerAddressFree(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:8081")
	if err != nil {
		t.Skipf("the default peer address is taken, a kvnode without --peer-listen cannot start here: %v", err)
	}
	l.Close()
}

// Started as the book's server is started, with only --listen and
// --data-dir on an empty directory, kvnode is a working single-node store,
// and stays one across a restart.
func TestBareNodeIsASingleNodeStore(t *testing.T) {
	defaultPeerAddressFree(t)
	dir := t.TempDir()
	p := launch(t, withoutKV(), "--listen", "127.0.0.1:0", "--data-dir", dir)
	p.waitReady(http.DefaultClient)
	p.session(t, http.DefaultClient, []exchange{
		{"GET", "/readyz", "", 200, "ok\n"},
		{"PUT", "/v1/key-a", "Hello, key-value store!", 201, ""},
		{"GET", "/v1/key-a", "", 200, "Hello, key-value store!"},
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	p = launch(t, withoutKV(), "--listen", "127.0.0.1:0", "--data-dir", dir)
	p.waitReady(http.DefaultClient)
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key-a"), ""); code != 200 || body != "Hello, key-value store!" {
		t.Fatalf("after restart GET /v1/key-a = %d %q", code, body)
	}
	// It says what it is, for rollouts: its build and its log format.
	var info clusterapi.Cluster
	getJSON(t, p.url(clusterapi.PathCluster), &info)
	if !strings.HasPrefix(info.Version, "devel") || info.LogFormat != txlog.FormatVersion || len(info.Members) != 1 || info.Members[0].Status == nil || info.Members[0].Status.Version != info.Version {
		t.Fatalf("GET /v1/cluster: version %q, log format %d, members %+v", info.Version, info.LogFormat, info.Members)
	}
}

// A node told it is a cluster member (--bootstrap=never, or a cluster flag
// under the default auto) does not start a cluster on an empty data
// directory: it has no leader and is not ready. The membership API still
// bootstraps it, and once it has Raft state it leads its cluster again
// after a restart.
func TestClusterMemberDoesNotBootstrapItself(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		args []string
		why  string
	}{
		{"never", nil, []string{"--bootstrap", "never"}, "--bootstrap=never"},
		{"auto with a cluster flag", nil, []string{"--peer-listen", "127.0.0.1:0"}, "--peer-listen"},
		{"auto with a cluster flag from the environment", []string{"KV_PEER_LISTEN=127.0.0.1:0"}, nil, "--peer-listen"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !slices.Contains(c.args, "--peer-listen") && len(c.env) == 0 {
				defaultPeerAddressFree(t)
			}
			args := append([]string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--node-id", "n0"}, c.args...)
			p := launch(t, withoutKV(c.env...), args...)
			// A single voter elects itself within a few election timeouts
			// (500 ms); one that never does stays unready.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if code, _ := request(t, http.DefaultClient, "GET", p.url("/readyz"), ""); code != 503 {
					t.Fatalf("/readyz = %d, want 503: the node bootstrapped itself", code)
				}
				time.Sleep(100 * time.Millisecond)
			}
			var info clusterapi.Cluster
			getJSON(t, p.url(clusterapi.PathCluster), &info)
			if info.Leader != "" || len(info.Members) != 0 {
				t.Fatalf("GET %s = %+v, want no leader and no members", clusterapi.PathCluster, info)
			}
			if out := p.output(); !strings.Contains(out, "waiting to be added to a cluster") || !strings.Contains(out, c.why) {
				t.Fatalf("the log does not say why the node waits (%s)", c.why)
			}

			if code, body := request(t, http.DefaultClient, "POST", p.url(clusterapi.PathBootstrap), ""); code != 200 {
				t.Fatalf("POST %s = %d %q", clusterapi.PathBootstrap, code, body)
			}
			p.waitReady(http.DefaultClient)
			if code, _ := request(t, http.DefaultClient, "PUT", p.url("/v1/key-a"), "x"); code != 201 {
				t.Fatalf("PUT after the API bootstrap = %d", code)
			}
			p.signal(syscall.SIGTERM)
			p.wait(10 * time.Second)
			p = launch(t, withoutKV(c.env...), args...)
			p.waitReady(http.DefaultClient)
			if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key-a"), ""); code != 200 || body != "x" {
				t.Fatalf("after restart GET = %d %q", code, body)
			}
		})
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// Which nodes may bootstrap themselves: the cluster flags are counted
// whether they come from the command line or the environment.
func TestBootstrapDecision(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want bool
		err  string
	}{
		{args: nil, want: true},
		{args: []string{"--listen", ":9000", "--data-dir", "d", "--node-id", "solo"}, want: true},
		{args: []string{"--bootstrap", "auto"}, want: true},
		{args: []string{"--peer-listen", "127.0.0.1:9001"}, want: false},
		{args: []string{"--peer-advertise", "kv-0.kv-peers:8081"}, want: false},
		{args: []string{"--api-advertise", "https://kv-0.kv-peers:8080"}, want: false},
		{args: []string{"--peer-tls-cert", "c", "--peer-tls-key", "k", "--peer-tls-ca", "ca"}, want: false},
		{env: map[string]string{"KV_PEER_ADVERTISE": "kv-0.kv-peers:8081"}, want: false},
		{args: []string{"--peer-listen", "127.0.0.1:9001", "--bootstrap", "always"}, want: true},
		{env: map[string]string{"KV_BOOTSTRAP": "always", "KV_PEER_LISTEN": "0.0.0.0:8081"}, want: true},
		{args: []string{"--bootstrap", "never"}, want: false},
		{env: map[string]string{"KV_BOOTSTRAP": "never"}, want: false},
		{args: []string{"--bootstrap", "yes"}, err: "--bootstrap must be auto, always or never"},
		{env: map[string]string{"KV_BOOTSTRAP": "true"}, err: "--bootstrap must be auto, always or never"},
		{args: []string{"--bootstrap"}, err: "flag needs an argument"},
	} {
		getenv := func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }
		cfg, err := parseConfig(c.args, getenv, io.Discard)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v %v: error %v, want %q", c.args, c.env, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v %v: %v", c.args, c.env, err)
			continue
		}
		if got, why := cfg.bootstrap(); got != c.want {
			t.Errorf("%v %v: bootstrap %v (%s), want %v", c.args, c.env, got, why, c.want)
		}
	}
}
