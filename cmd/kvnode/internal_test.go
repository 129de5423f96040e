package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

func encodeEvent(t *testing.T, e core.Event) []byte {
	t.Helper()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// propose posts body to the node's internal propose endpoint. chunked
// hides the length, so that only the server's read bound can stop it;
// otherwise the client announces the length and waits for 100-continue,
// so that a refused body is never sent.
func propose(t *testing.T, p *proc, body []byte, chunked bool) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.url(clusterapi.PathPropose), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if chunked {
		req.ContentLength = -1
		req.Body = io.NopCloser(struct{ io.Reader }{bytes.NewReader(body)}) // hides the length from the transport
	} else {
		req.Header.Set("Expect", "100-continue")
	}
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 10 * time.Second}, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

// A forwarded proposal is held to the same limits as a client's write: the
// internal endpoint once stored a 64 MiB event that the transaction log
// could not read back, and the node never started again.
func TestInternalProposeEnforcesTheAPILimits(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "--max-key-bytes", "16", "--max-value-bytes", "1024")
	put := func(key string, value int) []byte {
		return encodeEvent(t, core.Event{Type: core.EventPut, Key: key, Value: bytes.Repeat([]byte("v"), value)})
	}
	largest := put(strings.Repeat("k", 16), 1024)
	cases := []struct {
		name    string
		body    []byte
		chunked bool
		want    int
	}{
		{"the largest valid event", largest, false, http.StatusNoContent},
		{"a delete", encodeEvent(t, core.Event{Type: core.EventDelete, Key: "gone"}), false, http.StatusNoContent},
		{"key too long", put(strings.Repeat("k", 17), 1), false, http.StatusRequestURITooLong},
		{"value too large", put("k", 1025), false, http.StatusRequestEntityTooLarge},
		{"empty key", put("", 1), false, http.StatusBadRequest},
		{"not an event", []byte{0xff, 0x01, 0x02}, false, http.StatusBadRequest},
		{"metadata is not for clients", encodeEvent(t, core.Event{Type: core.EventMeta, Key: "cluster-id", Value: []byte("x")}), false, http.StatusBadRequest},
		{"body over the largest event, chunked", append(largest, 'x'), true, http.StatusRequestEntityTooLarge},
		// What was once stored: exactly the old 64 MiB read bound.
		{"64 MiB", put("big", 64<<20-1-1-len("big")), false, http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		if code, body := propose(t, p, c.body, c.chunked); code != c.want {
			t.Errorf("%s (%d bytes): %d %q, want %d", c.name, len(c.body), code, body, c.want)
		}
	}
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+strings.Repeat("k", 16)), ""); code != 200 || len(body) != 1024 {
		t.Fatalf("the largest valid event: GET = %d, %d bytes", code, len(body))
	}
	for _, k := range []string{"big", "k", strings.Repeat("k", 17)} {
		if code, _ := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+k+"?consistency=stale"), ""); code != 404 && code != 414 {
			t.Errorf("refused event for %q was stored: GET = %d", k, code)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	p = start(t, dir, "--max-key-bytes", "16", "--max-value-bytes", "1024")
	if code, body := request(t, http.DefaultClient, "GET", p.url("/v1/key/"+strings.Repeat("k", 16)), ""); code != 200 || len(body) != 1024 {
		t.Fatalf("after restart GET = %d, %d bytes", code, len(body))
	}
}

// The internal endpoints share the public API's in-flight bound: a flood
// of forwarded proposals must not get past load shedding.
func TestInternalEndpointsAreShed(t *testing.T) {
	p := start(t, t.TempDir(), "--max-in-flight", "1")
	// A PUT whose body never finishes holds the only slot.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "PUT /v1/key/slow HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\nab", p.addr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := request(t, http.DefaultClient, "GET", p.url("/v1/key/k?consistency=stale"), "")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow PUT never held the slot: GET = %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, r := range []struct{ method, path, body string }{
		{"POST", clusterapi.PathPropose, string(encodeEvent(t, core.Event{Type: core.EventPut, Key: "k", Value: []byte("v")}))},
		{"GET", clusterapi.PathReadIndex, ""},
		{"GET", clusterapi.PathStatus, ""},
	} {
		if code, body := request(t, http.DefaultClient, r.method, p.url(r.path), r.body); code != http.StatusServiceUnavailable || !strings.Contains(body, "overloaded") {
			t.Errorf("%s %s with every slot taken = %d %q, want 503 overloaded", r.method, r.path, code, body)
		}
	}
	// Probes stay exempt.
	if code, _ := request(t, http.DefaultClient, "GET", p.url("/livez"), ""); code != 200 {
		t.Errorf("/livez = %d while shedding", code)
	}
}

// A batch of forwarded writes is held to the same limits, event by event:
// each gets the answer a request of its own would have had, and the valid
// ones are stored. A batch that cannot be split is refused whole, saying
// that nothing of it was applied.
func TestInternalProposeBatch(t *testing.T) {
	p := start(t, t.TempDir(), "--max-key-bytes", "16", "--max-value-bytes", "1024")
	put := func(key string, value int) []byte {
		return encodeEvent(t, core.Event{Type: core.EventPut, Key: key, Value: bytes.Repeat([]byte("v"), value)})
	}
	post := func(body []byte) (int, http.Header, []byte) {
		t.Helper()
		resp, err := http.Post(p.url(clusterapi.PathProposeBatch), "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	status, _, body := post(clusterapi.EncodeBatch([][]byte{
		put("a", 10),
		put(strings.Repeat("k", 17), 1),
		put("b", 1025),
		put("", 1),
		{0xff, 0x01},
		encodeEvent(t, core.Event{Type: core.EventDelete, Key: "gone"}),
	}))
	if status != http.StatusOK {
		t.Fatalf("batch: %d %s", status, body)
	}
	var out clusterapi.ProposeBatchResponse
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	want := []int{http.StatusNoContent, http.StatusRequestURITooLong, http.StatusRequestEntityTooLarge, http.StatusBadRequest, http.StatusBadRequest, http.StatusNoContent}
	if len(out.Results) != len(want) {
		t.Fatalf("%d results for %d events: %s", len(out.Results), len(want), body)
	}
	for i, r := range out.Results {
		if r.Status != want[i] || r.Unknown || (r.Status != http.StatusNoContent) != (r.Error != "") {
			t.Errorf("event %d: %+v, want status %d with a reason if refused", i, r, want[i])
		}
	}
	if code, v := request(t, http.DefaultClient, "GET", p.url("/v1/key/a"), ""); code != 200 || len(v) != 10 {
		t.Errorf("GET a = %d %q", code, v)
	}
	if code, _ := request(t, http.DefaultClient, "GET", p.url("/v1/key/b?consistency=stale"), ""); code != 404 {
		t.Errorf("the refused event was stored: GET b = %d", code)
	}

	for name, body := range map[string][]byte{
		"cut short":        append(binary.AppendUvarint(nil, 100), "short"...),
		"an event too big": clusterapi.EncodeBatch([][]byte{make([]byte, clusterapi.MaxBatchEventBytes+1)}),
		"a body too big":   make([]byte, clusterapi.MaxBatchBytes+1),
	} {
		status, header, b := post(body)
		if status < 400 || status >= 500 || header.Get(keyapi.HeaderOutcome) != keyapi.OutcomeNotApplied {
			t.Errorf("%s: %d %s %q, want a 4xx that says nothing was applied", name, status, header.Get(keyapi.HeaderOutcome), b)
		}
	}
}
