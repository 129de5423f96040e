package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// tally is what a stream of requests got.
type tally struct {
	mu          sync.Mutex
	allowed     int // any answer but 429
	rejected    int // 429
	other       map[int]int
	said        map[int]string // a body of each other status
	retryAfter  map[string]int // of the 429s
	reason      string         // the body of a 429
	first, last time.Time      // the first request sent, the last answer
}

func (t *tally) String() string {
	return fmt.Sprintf("%d allowed, %d rejected (Retry-After %v) in %.2fs", t.allowed, t.rejected, t.retryAfter, t.last.Sub(t.first).Seconds())
}

// hammer sends GET url from workers goroutines, each as fast as it is
// answered, until the deadline.
func hammer(t *testing.T, c *http.Client, url string, workers int, until time.Time) *tally {
	t.Helper()
	res := &tally{other: map[int]int{}, said: map[int]string{}, retryAfter: map[string]int{}, first: time.Now()}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) {
				resp, err := c.Get(url)
				if err != nil {
					t.Errorf("GET %s: %v", url, err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.mu.Lock()
				if resp.StatusCode == http.StatusTooManyRequests {
					res.rejected++
					res.retryAfter[resp.Header.Get("Retry-After")]++
					res.reason = string(body)
				} else {
					res.allowed++
					res.other[resp.StatusCode]++
					res.said[resp.StatusCode] = strings.TrimSpace(string(body))
				}
				res.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.last = time.Now()
	return res
}

// A real node with mutual TLS holds each client of the key API to its
// own rate, from the rules file: two clients with different limits are
// hammered at once, and each is allowed what its bucket holds (its burst,
// and its rate over the time) whatever the other does; the rest are 429
// with Retry-After. A client unlimited of its own, the probes, the
// membership API (the operator) and the internal calls (the members) are
// never throttled, even from an address that is; requests without a
// certificate are counted by address. A change of the rules applies
// without a restart.
func TestClientThrottling(t *testing.T) {
	dir := t.TempDir()
	ca := storeCA(t, dir)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	clientAs := func(cn string) *http.Client {
		tc := &tls.Config{RootCAs: pool}
		if cn != "" {
			name := strings.ReplaceAll(cn, ":", "-")
			issue(t, ca, dir, name, certs.Leaf{CommonName: cn, Client: true, Lifetime: time.Hour})
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 16}}
	}
	f := func(v float64) *float64 { return &v }
	n := func(v int) *int { return &v }
	const (
		appRate, appBurst     = 20.0, 10
		batchRate, batchBurst = 0.5, 3
		storeRate, storeBurst = 5.0, 5
	)
	rules := filepath.Join(dir, access.RulesFile)
	writeRules(t, rules,
		access.Client{Name: "app", Access: access.ReadWrite, RequestsPerSecond: f(appRate), Burst: n(appBurst)},
		access.Client{Name: "batch", Access: access.ReadWrite, RequestsPerSecond: f(batchRate), Burst: n(batchBurst)},
		access.Client{Name: "ops", Access: access.ReadWrite, RequestsPerSecond: f(0)},
	)
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ca", filepath.Join(dir, "ca.crt"),
		"--tls-reload-interval", "100ms", "--client-auth", "mtls", "--clients", rules,
		"--client-rate", strconv.FormatFloat(storeRate, 'g', -1, 64), "--client-burst", strconv.Itoa(storeBurst))
	anonymous := clientAs("")
	p.waitReady(anonymous)
	app, batch, ops, admin := clientAs(access.CommonName("app")), clientAs(access.CommonName("batch")), clientAs(access.CommonName("ops")), clientAs("kvstore-admin")
	if code, _ := request(t, ops, "PUT", p.url("/v1/key/k"), "v"); code != 201 {
		t.Fatalf("PUT = %d", code)
	}

	const d = 3 * time.Second
	until := time.Now().Add(d)
	key := p.url("/v1/key/k?consistency=stale")
	var wg sync.WaitGroup
	var appT, batchT, opsT, anonT, probesT, membersT, internalT *tally
	for _, h := range []struct {
		out     **tally
		c       *http.Client
		url     string
		workers int
	}{
		{&appT, app, key, 4},
		{&batchT, batch, key, 4},
		{&opsT, ops, key, 2},
		{&anonT, anonymous, key, 1},
		{&probesT, anonymous, p.url("/readyz"), 1},
		{&membersT, admin, p.url(clusterapi.PathCluster), 1},
		{&internalT, anonymous, p.url(clusterapi.PathStatus), 1}, // a loopback caller: a member, without peer certificates
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			*h.out = hammer(t, h.c, h.url, h.workers, until)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for name, r := range map[string]*tally{"app": appT, "batch": batchT, "ops": opsT, "no certificate": anonT, "/readyz": probesT, "membership API": membersT, "internal API": internalT} {
		t.Logf("%-14s %v, answers %v", name, r, r.other)
		if r.other[503] > 0 {
			t.Logf("%-14s 503 says %q", name, r.said[503])
		}
	}

	// Each client within its bucket: the burst, plus the rate over the
	// time the node saw its requests (at most first to last, at least
	// four fifths of it on a busy machine), give or take a token.
	within := func(name string, r *tally, rate float64, burst int, status int) {
		t.Helper()
		elapsed := r.last.Sub(r.first).Seconds()
		lo, hi := burst+int(rate*elapsed*0.8)-1, burst+int(rate*elapsed)+1
		if r.allowed < lo || r.allowed > hi {
			t.Errorf("%s at %v/s (burst %d): %d allowed in %.2fs, want %d to %d", name, rate, burst, r.allowed, elapsed, lo, hi)
		}
		if r.rejected == 0 {
			t.Errorf("%s: never throttled", name)
		}
		if r.other[status] != r.allowed {
			t.Errorf("%s: answers %v besides 429, want %d", name, r.other, status)
		}
	}
	within("app", appT, appRate, appBurst, 200)
	within("batch", batchT, batchRate, batchBurst, 200)
	within("no certificate", anonT, storeRate, storeBurst, 401) // counted by address, then refused its certificate
	// Retry-After: whole seconds until the next token, at least 1: at
	// most 1s at 20/s, up to 2s at 0.5/s.
	if len(appT.retryAfter) != 1 || appT.retryAfter["1"] == 0 {
		t.Errorf("app's Retry-After: %v, want 1 always", appT.retryAfter)
	}
	if batchT.retryAfter["2"] == 0 || batchT.retryAfter["1"]+batchT.retryAfter["2"] != batchT.rejected {
		t.Errorf("batch's Retry-After: %v, want 1 or 2, and 2 right after its burst", batchT.retryAfter)
	}
	if !regexp.MustCompile(`^too many requests: client "batch" is over its rate of 0\.5/s \(burst 3\); retry after [12]s\n$`).MatchString(batchT.reason) {
		t.Errorf("batch's 429 says %q", batchT.reason)
	}
	if !strings.HasPrefix(anonT.reason, "too many requests: 127.0.0.1 is over its rate of 5/s (burst 5)") {
		t.Errorf("a 429 without a certificate says %q", anonT.reason)
	}
	// Never throttled, from an address that is.
	for name, r := range map[string]*tally{"ops (unlimited)": opsT, "/readyz": probesT, "membership API": membersT, "internal API": internalT} {
		if r.rejected != 0 || r.allowed < 10 {
			t.Errorf("%s: %v, want many, none throttled", name, r)
		}
	}
	if membersT.other[200] != membersT.allowed || internalT.other[200] != internalT.allowed {
		t.Errorf("membership API %v, internal API %v: want 200 each", membersT.other, internalT.other)
	}
	// The metrics count the refusals by client, and those without a
	// certificate under no address.
	_, metrics := request(t, anonymous, "GET", p.url("/metrics"), "")
	for _, want := range []string{
		fmt.Sprintf(`kvnode_throttled_requests_total{by="client",client="app"} %d`, appT.rejected),
		fmt.Sprintf(`kvnode_throttled_requests_total{by="client",client="batch"} %d`, batchT.rejected),
		fmt.Sprintf(`kvnode_throttled_requests_total{by="address",client=""} %d`, anonT.rejected),
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, `client="ops"`) || strings.Contains(metrics, "127.0.0.1") {
		t.Error("/metrics: a client never throttled, or an address, in the throttling counter")
	}
	if strings.Contains(p.output(), "too many requests") {
		t.Error("refusals are logged: anyone who reaches the port could fill the log")
	}

	// The rules file lifts batch's limit: in force without a restart.
	writeRules(t, rules,
		access.Client{Name: "app", Access: access.ReadWrite, RequestsPerSecond: f(appRate), Burst: n(appBurst)},
		access.Client{Name: "batch", Access: access.ReadWrite, RequestsPerSecond: f(0)},
	)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := hammer(t, batch, key, 1, time.Now().Add(200*time.Millisecond))
		if r.rejected == 0 && r.allowed >= 20 {
			t.Logf("batch once unlimited: %v", r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch's new rate not in force: %v", r)
		}
	}
}

// The limits are checked at start.
func TestClientRateFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--client-rate", "-1"}, "--client-rate and --client-burst must be at least 0"},
		{[]string{"--client-rate", "NaN"}, "--client-rate and --client-burst must be at least 0"},
		{[]string{"--client-rate", "+Inf"}, "--client-rate and --client-burst must be at least 0"},
		{[]string{"--client-burst", "-1"}, "--client-rate and --client-burst must be at least 0"},
		{[]string{"--client-rate-identities", "0"}, "--client-rate-identities must be at least 1"},
		{[]string{"--client-rate", "fast"}, `invalid value "fast"`},
	} {
		if _, err := parseConfig(c.args, func(string) (string, bool) { return "", false }, io.Discard); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.says)
		}
	}
	env := map[string]string{"KV_CLIENT_RATE": "2.5", "KV_CLIENT_BURST": "7", "KV_CLIENT_RATE_IDENTITIES": "99"}
	c, err := parseConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil || c.ClientRate != 2.5 || c.ClientBurst != 7 || c.RateIdentities != 99 {
		t.Fatalf("from the environment: %+v %v", c, err)
	}
	c, err = parseConfig(nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil || c.ClientRate != 0 || c.ClientBurst != 0 || c.RateIdentities != 10000 {
		t.Fatalf("defaults: no throttling, 10000 identities: %+v %v", c, err)
	}
}
