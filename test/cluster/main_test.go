// Package cluster_test runs real kvnode clusters on loopback: membership
// changes, lost volumes, and linearizability under faults.
package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

var kvnodeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvnode-bin")
	if err != nil {
		panic(err)
	}
	kvnodeBin, err = harness.BuildKvnode(filepath.Join("..", ".."), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newCluster(t *testing.T, extra ...string) *harness.Cluster {
	t.Helper()
	c, err := harness.New(harness.Options{Binary: kvnodeBin, Dir: t.TempDir(), ExtraArgs: append([]string{"--request-timeout", "3s"}, extra...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(os.Stderr)
		}
		c.Close()
	})
	return c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// kv calls the client API of m; it returns the status and body.
func kv(c *harness.Cluster, m *harness.Member, method, key, value string, query string) (int, string, error) {
	code, body, _, err := kvOutcome(c, m, method, key, value, query)
	return code, body, err
}

// kvOutcome is kv, and the answer's keyapi.HeaderOutcome.
func kvOutcome(c *harness.Cluster, m *harness.Member, method, key, value string, query string) (int, string, string, error) {
	var body io.Reader
	if method == "PUT" {
		body = strings.NewReader(value)
	}
	u := m.API + "/v1/key/" + url.PathEscape(key)
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return 0, "", "", err
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get(keyapi.HeaderOutcome), err
}

func jsonDecode(resp *http.Response, v any) error {
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
