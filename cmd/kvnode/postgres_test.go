package main

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog/pgtest"
)

// TestPostgresMode runs two stateless kvnode processes on one PostgreSQL
// log, configured as the operator configures them (TLOG_* variables, the
// password in the environment only): a write on one is read on the other,
// the cluster API is not there, readiness follows PostgreSQL, and the
// password is nowhere in the logs.
func TestPostgresMode(t *testing.T) {
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	env := append(os.Environ(),
		"KV_LOG=postgres",
		"TLOG_DB_HOST="+pg.Socket(),
		"TLOG_DB_PORT="+strconv.Itoa(pg.Port),
		"TLOG_DB_DATABASE="+db,
		"TLOG_DB_USERNAME="+pgtest.User,
		"TLOG_DB_PASSWORD="+pgtest.Password,
		"TLOG_DB_SSLMODE=disable",
		"TLOG_DB_STORE=default/demo",
	)
	var nodes []*proc
	for i := range 2 {
		p := launch(t, env, "--listen", "127.0.0.1:0", "--node-id", "n"+strconv.Itoa(i), "--data-dir", "/nonexistent")
		p.waitReady(http.DefaultClient)
		nodes = append(nodes, p)
	}
	a, b := nodes[0], nodes[1]
	a.session(t, http.DefaultClient, []exchange{{"PUT", "/v1/key/greeting", "hello", http.StatusCreated, ""}})
	b.session(t, http.DefaultClient, []exchange{
		{"GET", "/v1/key/greeting", "", http.StatusOK, "hello"},
		{"GET", "/v1/key/greeting?consistency=strict", "", http.StatusOK, "hello"},
		{"DELETE", "/v1/key/greeting", "", http.StatusOK, ""},
	})
	a.session(t, http.DefaultClient, []exchange{{"GET", "/v1/key/greeting", "", http.StatusNotFound, ""}})
	if code, body := request(t, http.DefaultClient, "GET", a.url("/v1/cluster"), ""); code != http.StatusNotFound || !strings.Contains(body, "postgres") {
		t.Fatalf("GET /v1/cluster = %d %q", code, body)
	}

	pg.Stop(t)
	waitFor(t, 20*time.Second, "readiness to fail with postgres down", func() bool {
		code, _ := request(t, http.DefaultClient, "GET", b.url("/readyz"), "")
		return code == http.StatusServiceUnavailable
	})
	code, body := request(t, http.DefaultClient, "PUT", a.url("/v1/key/k"), "v")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("PUT with postgres down = %d %q, want 503", code, body)
	}
	pg.Start(t)
	a.waitReady(http.DefaultClient)
	b.waitReady(http.DefaultClient)
	a.session(t, http.DefaultClient, []exchange{{"PUT", "/v1/key/k", "v2", http.StatusCreated, ""}})
	b.session(t, http.DefaultClient, []exchange{{"GET", "/v1/key/k", "", http.StatusOK, "v2"}})

	for _, p := range nodes {
		p.signal(os.Interrupt)
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.output())
		}
		if out := p.output(); strings.Contains(out, pgtest.Password) || strings.Contains(out, "word'") {
			t.Fatalf("the password is in the log:\n%s", out)
		}
	}
}

func TestPostgresModeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log=postgres"}, "host is empty"},
		{[]string{"--log=postgres", "--postgres-host=db", "--postgres-database=kv", "--postgres-sslmode=verify-full"}, "CA file"},
		{[]string{"--log=postgres", "--postgres-host=db", "--postgres-database=kv", "--restore-from=x"}, "--restore-from"},
		{[]string{"--log=etcd"}, "--log must be"},
	} {
		_, err := parseConfig(tc.args, func(string) (string, bool) { return "", false }, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
