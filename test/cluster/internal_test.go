package cluster_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// The calls members make to each other are for members only: a proposal
// goes straight into the log every replica stores. A client, even one
// holding the admin certificate, gets 403; a member's peer certificate is
// let in, and followers, which present theirs, still forward writes and
// linearizable reads.
func TestInternalAPIIsForMembersOnly(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	cmd, err := core.Event{Type: core.EventPut, Key: "planted", Value: []byte("x")}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	call := func(client *http.Client, method, url string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	for name, client := range map[string]*http.Client{"no client certificate": c.Client, "the admin certificate": c.Admin} {
		for _, m := range c.Members() {
			for _, r := range []struct {
				method, path string
				body         []byte
			}{
				{http.MethodPost, clusterapi.PathPropose, cmd},
				{http.MethodGet, clusterapi.PathReadIndex, nil},
				{http.MethodGet, clusterapi.PathStatus, nil},
			} {
				if code, body := call(client, r.method, m.API+r.path, r.body); code != http.StatusForbidden {
					t.Errorf("%s: %s %s on %s = %d %q, want 403", name, r.method, r.path, m.ID, code, body)
				}
			}
		}
	}
	for _, m := range c.Members() {
		if code, _, _ := kv(c, m, "GET", "planted", "", "consistency=stale"); code != http.StatusNotFound {
			t.Errorf("a refused proposal was stored on %s: GET = %d", m.ID, code)
		}
		if code, body := call(c.Peer, http.MethodGet, m.API+clusterapi.PathStatus, nil); code != http.StatusOK {
			t.Errorf("a peer certificate: status of %s = %d %q", m.ID, code, body)
		}
	}
	// Every member, followers included, takes writes and linearizable reads.
	for i, m := range c.Members() {
		k, v := fmt.Sprint("via-", m.ID), fmt.Sprint(i)
		if code, body, err := kv(c, m, "PUT", k, v, ""); err != nil || code != http.StatusCreated {
			t.Fatalf("PUT through %s: %d %q %v", m.ID, code, body, err)
		}
		for _, r := range c.Members() {
			if code, body, err := kv(c, r, "GET", k, "", ""); err != nil || code != http.StatusOK || body != v {
				t.Fatalf("linearizable GET %s through %s: %d %q %v", k, r.ID, code, body, err)
			}
		}
	}
}
