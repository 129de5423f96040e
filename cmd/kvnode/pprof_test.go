package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// Profiles hold keys and values in memory: they are served on loopback
// only, never on the API port, and only when asked for.
func TestProfilesOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{":6060", "0.0.0.0:6060", "10.1.2.3:6060", "[::]:6060", "example.com:6060", "6060"} {
		out, err := exec.Command(kvnodeBin, "--pprof-listen", addr, "--data-dir", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--pprof-listen must be a loopback address") {
			t.Errorf("--pprof-listen %s: %v, %s", addr, err, out)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:6060"} {
		if _, err := parseConfig([]string{"--pprof-listen", addr}, func(string) (string, bool) { return "", false }, io.Discard); err != nil {
			t.Errorf("--pprof-listen %s: %v", addr, err)
		}
	}

	p := start(t, t.TempDir(), "--pprof-listen", "127.0.0.1:0")
	var served string
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	for sc.Scan() {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "profiles served" {
			served = rec.Addr
		}
	}
	if served == "" {
		t.Fatalf("no \"profiles served\" line:\n%s", p.output())
	}
	if code, body := request(t, http.DefaultClient, "GET", "http://"+served+"/debug/pprof/cmdline", ""); code != 200 || !strings.Contains(body, "kvnode") {
		t.Errorf("profiles: %d %q", code, body)
	}
	if code, _ := request(t, http.DefaultClient, "GET", p.url("/debug/pprof/cmdline"), ""); code != 404 {
		t.Errorf("the API port answers /debug/pprof/: %d", code)
	}
}
