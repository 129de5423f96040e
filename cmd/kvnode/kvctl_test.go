package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// kvctl, run as a user runs it in a client pod (a client Secret's files in
// one directory, the endpoint in the environment), against a real node
// with client authentication: each command's output and exit status.
func TestKvctl(t *testing.T) {
	dir := t.TempDir()
	ca := storeCA(t, dir)
	// A client Secret as the pod sees it: ca.crt, tls.crt, tls.key.
	secret := func(name string) string {
		d := filepath.Join(dir, "client-"+name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "ca.crt"), ca.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		issue(t, ca, d, "tls", certs.Leaf{CommonName: access.CommonName(name), Client: true, Lifetime: time.Hour})
		return d
	}
	app, reports := secret("app"), secret("reports")
	rules := filepath.Join(dir, access.RulesFile)
	writeRules(t, rules, access.Client{Name: "app", Access: access.ReadWrite}, access.Client{Name: "reports", Access: access.ReadOnly})
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ca", filepath.Join(dir, "ca.crt"),
		"--client-auth", "mtls", "--clients", rules)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	p.waitReady(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}})

	endpoint := p.url("")
	kvctl := func(tlsDir, stdin string, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(kvctlBin, args...)
		cmd.Env = []string{"KV_ENDPOINT=" + endpoint, "KV_TLS_DIR=" + tlsDir, "KV_TIMEOUT=5s"}
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	for _, c := range []struct {
		name   string
		tlsDir string
		stdin  string
		args   []string
		code   int
		out    string
		errOut string
	}{
		{"put", app, "", []string{"put", "greeting", "Hello, key-value store!"}, 0, "", ""},
		{"get", app, "", []string{"get", "greeting"}, 0, "Hello, key-value store!", ""},
		{"put from stdin, a key with a slash and a space", app, "line 1\nline 2\n", []string{"put", "app/a b", "-"}, 0, "", ""},
		{"get it", app, "", []string{"get", "--consistency", "strict", "app/a b"}, 0, "line 1\nline 2\n", ""},
		{"list", app, "", []string{"list"}, 0, "app/a b\ngreeting\n", ""},
		{"list a prefix, stale", reports, "", []string{"list", "--consistency", "stale", "app/"}, 0, "app/a b\n", ""},
		{"list with a limit", app, "", []string{"list", "--limit", "1"}, 0, "app/a b\n", ""},
		{"a read-only client may read", reports, "", []string{"get", "greeting"}, 0, "Hello, key-value store!", ""},
		{"a read-only client may not write", reports, "", []string{"put", "greeting", "x"}, 1, "", "403 Forbidden: client \"reports\" is read-only"},
		{"delete", app, "", []string{"delete", "greeting"}, 0, "", ""},
		{"a missing key", app, "", []string{"get", "greeting"}, 3, "", "404 Not Found"},
		{"delete a missing key", app, "", []string{"delete", "greeting"}, 0, "", ""},
		{"without a client certificate", filepath.Join(dir, "no-such-secret"), "", []string{"get", "app/a b"}, 2, "", "CA bundle"},
		{"a bad consistency", app, "", []string{"get", "--consistency", "eventual", "k"}, 2, "", "--consistency must be"},
		{"an unknown command", app, "", []string{"watch", "k"}, 2, "", "unknown command"},
		{"too many arguments", app, "", []string{"get", "a", "b"}, 2, "", "wrong number of arguments"},
	} {
		code, out, errOut := kvctl(c.tlsDir, c.stdin, c.args...)
		if code != c.code || out != c.out || !strings.Contains(errOut, c.errOut) || (c.errOut == "" && errOut != "") {
			t.Errorf("%s: kvctl %s = exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", c.name, strings.Join(c.args, " "), code, out, errOut, c.code, c.out, c.errOut)
		}
	}
	// The same over gRPC, on the data REST wrote.
	grpcEndpoint := "https://" + p.grpcAddr
	for _, c := range []struct {
		name   string
		tlsDir string
		args   []string
		code   int
		out    string
		errOut string
	}{
		{"get what REST wrote", app, []string{"get", "--grpc", "--endpoint", grpcEndpoint, "app/a b"}, 0, "line 1\nline 2\n", ""},
		{"put", app, []string{"put", "--grpc", "--endpoint", grpcEndpoint, "g", "over gRPC"}, 0, "", ""},
		{"get it over REST", app, []string{"get", "g"}, 0, "over gRPC", ""},
		{"list, stale", reports, []string{"list", "--grpc", "--endpoint", grpcEndpoint, "--consistency", "stale"}, 0, "app/a b\ng\n", ""},
		{"a read-only client may not write", reports, []string{"delete", "--grpc", "--endpoint", grpcEndpoint, "g"}, 1, "", "PermissionDenied: client \"reports\" is read-only"},
		{"a missing key", app, []string{"get", "--grpc", "--endpoint", grpcEndpoint, "nope"}, 3, "", "NotFound"},
	} {
		code, out, errOut := kvctl(c.tlsDir, "", c.args...)
		if code != c.code || out != c.out || !strings.Contains(errOut, c.errOut) || (c.errOut == "" && errOut != "") {
			t.Errorf("gRPC, %s: kvctl %s = exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", c.name, strings.Join(c.args, " "), code, out, errOut, c.code, c.out, c.errOut)
		}
	}

	// Only the CA (the ConfigMap <store>-ca mounted): no client certificate.
	caOnly := filepath.Join(dir, "ca-only")
	if err := os.Mkdir(caOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caOnly, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := kvctl(caOnly, "", "get", "k"); code != 1 || !strings.Contains(errOut, "401 Unauthorized") {
		t.Errorf("without a client certificate: exit %d, %q", code, errOut)
	}
}
