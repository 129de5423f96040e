package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
)

// writeRules replaces the rules file the way the kubelet updates a
// ConfigMap volume: written elsewhere, renamed into place.
func writeRules(t *testing.T, path string, clients ...access.Client) {
	t.Helper()
	b, err := json.Marshal(access.Rules{Clients: clients})
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// With --client-auth=mtls a real node admits the clients its rules name,
// each within its rights, and follows the rules file as it changes: the
// statuses are those a client sees (401 without an accepted
// certificate, 403 outside its rights), and probes stay open.
func TestClientAuthorization(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("store CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := certs.NewCA("another CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issue(t, ca, dir, "tls", certs.Leaf{CommonName: "kvnode", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Lifetime: time.Hour})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	clientOf := func(from *certs.CA, cn string, server bool) *http.Client {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		if cn == "" {
			return c
		}
		name := strings.NewReplacer(":", "-", " ", "-").Replace(cn) + "-" + from.Cert.Subject.CommonName
		issue(t, from, dir, name, certs.Leaf{CommonName: cn, Client: true, Server: server, Lifetime: time.Hour})
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
		return c
	}
	rules := filepath.Join(dir, access.RulesFile)
	writeRules(t, rules,
		access.Client{Name: "app", Access: access.ReadWrite, Prefix: "app/"},
		access.Client{Name: "reporting", Access: access.ReadOnly},
		access.Client{Name: "ops", Access: access.ReadWrite},
	)
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ca", filepath.Join(dir, "ca.crt"),
		"--tls-reload-interval", "100ms", "--client-auth", "mtls", "--clients", rules)
	anonymous := clientOf(ca, "", false)
	p.waitReady(anonymous) // probes need no certificate

	app, reporting, ops := clientOf(ca, access.CommonName("app"), false), clientOf(ca, access.CommonName("reporting"), false), clientOf(ca, access.CommonName("ops"), false)
	for _, c := range []struct {
		name         string
		client       *http.Client
		method, path string
		body         string
		want         int
		says         string
	}{
		{"no certificate", anonymous, "GET", "/v1/key/app/a", "", 401, "no client certificate"},
		{"no certificate, PUT", anonymous, "PUT", "/v1/key/app/a", "x", 401, "no client certificate"},
		{"no certificate, list", anonymous, "GET", "/v1/keys", "", 401, "no client certificate"},
		{"a client the rules do not name", clientOf(ca, access.CommonName("stranger"), false), "GET", "/v1/key/a", "", 401, `"stranger" is not a client`},
		{"the admin certificate", clientOf(ca, "kvstore-admin", false), "GET", "/v1/key/a", "", 401, "not a client certificate"},
		{"a pod's certificate", clientOf(ca, "demo peer", true), "GET", "/v1/key/a", "", 401, "not a client certificate"},
		{"a client name from another CA", clientOf(rogue, access.CommonName("ops"), false), "GET", "/v1/key/a", "", 401, "no client certificate"}, // not even sent: the handshake names the CAs it accepts
		{"app writes in its prefix", app, "PUT", "/v1/key/app/a", "1", 201, ""},
		{"app reads in its prefix", app, "GET", "/v1/key/app/a", "", 200, "1"},
		{"app outside its prefix", app, "PUT", "/v1/key/other", "1", 403, `only use keys that start with "app/"`},
		{"app outside its prefix, escaped", app, "GET", "/v1/key/ap%70%2F..%2Fx", "", 404, ""}, // "app/../x" is in the prefix: keys are bytes, not paths
		{"app outside its prefix, short route", app, "GET", "/v1/other", "", 403, "only use keys"},
		{"app deletes outside its prefix", app, "DELETE", "/v1/key/other", "", 403, "only use keys"},
		{"ops writes anywhere", ops, "PUT", "/v1/key/other", "2", 201, ""},
		{"reporting reads anywhere", reporting, "GET", "/v1/key/other", "", 200, "2"},
		{"reporting HEAD", reporting, "HEAD", "/v1/key/other", "", 200, ""},
		{"reporting may not write", reporting, "PUT", "/v1/key/other", "3", 403, "read-only"},
		{"reporting may not delete", reporting, "DELETE", "/v1/key/other", "", 403, "read-only"},
		{"app lists its prefix", app, "GET", "/v1/keys", "", 200, `{"keys":["app/a"]}`},
		{"app lists within its prefix", app, "GET", "/v1/keys?prefix=app/", "", 200, `{"keys":["app/a"]}`},
		{"app lists another prefix", app, "GET", "/v1/keys?prefix=o", "", 403, "only list keys"},
		{"ops lists all", ops, "GET", "/v1/keys", "", 200, `{"keys":["app/a","other"]}`},
		{"metrics stay open", anonymous, "GET", "/metrics", "", 200, ""},
	} {
		code, body := request(t, c.client, c.method, p.url(c.path), c.body)
		if code != c.want || !strings.Contains(body, c.says) {
			t.Errorf("%s: %s %s = %d %q, want %d with %q", c.name, c.method, c.path, code, body, c.want, c.says)
		}
		if c.want >= 400 && strings.Count(strings.TrimSpace(body), "\n") > 0 {
			t.Errorf("%s: the reason is more than one line: %q", c.name, body)
		}
	}
	if strings.Contains(p.output(), "stranger") {
		t.Error("refusals are logged: anyone who reaches the port could fill the log")
	}

	// Removed from the rules: refused within the reload interval.
	writeRules(t, rules, access.Client{Name: "app", Access: access.ReadWrite, Prefix: "app/"}, access.Client{Name: "reporting", Access: access.ReadOnly})
	waitStatus(t, ops, p.url("/v1/key/other"), 401)
	// Added again under the same name: its old certificate stays refused.
	writeRules(t, rules, access.Client{Name: "ops", Access: access.ReadWrite, IssuedAfter: time.Now().Add(time.Minute)})
	waitStatus(t, app, p.url("/v1/key/app/a"), 401)
	if code, body := request(t, ops, "GET", p.url("/v1/key/other"), ""); code != 401 || !strings.Contains(body, "issued before") {
		t.Errorf("an old certificate of a re-created client: %d %q", code, body)
	}
	// A broken file keeps the last good rules.
	if err := os.WriteFile(rules, []byte(`{"clients":[{"name":"x","access":"everything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if code, _ := request(t, app, "GET", p.url("/v1/key/app/a"), ""); code != 401 {
		t.Errorf("after a broken rules file, app = %d, want the last good rules (401)", code)
	}
	if n := strings.Count(p.output(), "keeping the last good ones"); n != 1 {
		t.Errorf("a broken rules file is logged %d times, want once", n)
	}
}

func waitStatus(t *testing.T, c *http.Client, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := request(t, c, "GET", url, "")
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q, want %d", url, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node refuses to start with client authentication it cannot enforce.
func TestClientAuthNeedsItsFiles(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--client-auth", "mtls"}, "--client-auth=mtls needs"},
		{[]string{"--client-auth", "yes"}, "--client-auth must be none or mtls"},
		{[]string{"--clients", "x.json"}, "--clients is enforced only with --client-auth=mtls"},
	} {
		if _, err := parseConfig(c.args, func(string) (string, bool) { return "", false }, os.Stderr); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.says)
		}
	}
}
