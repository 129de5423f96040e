// Command clusterbench compares a 3-member kvnode cluster with a 3-member
// etcd cluster on the same machine, in one run, with the same load
// generator: 32 clients spread over the three members, 128-byte values,
// fsync on in both. etcd is driven through its HTTP JSON gateway
// (POST /v3/kv/put and /v3/kv/range). Both run without TLS, so that the
// comparison is of the stores, not of the handshakes. A bare net/http
// server that answers a constant gives the machine's HTTP ceiling.
//
//	go run ./hack/clusterbench -kvnode bin/kvnode -etcd "$(hack/k8s-binaries.sh etcd)/etcd"
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kvstore-operator/kvstore-operator/hack/loadgen"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

func main() {
	serveCeiling := flag.String("serve-ceiling", "", "internal: serve the constant handler on this address")
	kvnode := flag.String("kvnode", "bin/kvnode", "kvnode binary")
	etcdBin := flag.String("etcd", "", "etcd binary (hack/k8s-binaries.sh etcd builds one)")
	clients := flag.Int("clients", 32, "concurrent clients")
	valueSize := flag.Int("value", 128, "value size in bytes")
	keys := flag.Int("keys", 10000, "distinct keys")
	duration := flag.Duration("duration", 5*time.Second, "length of each measurement")
	flag.Parse()
	if *serveCeiling != "" {
		log.Fatal(loadgen.ServeConstant(*serveCeiling))
	}
	if *etcdBin == "" {
		log.Fatal("-etcd is required")
	}
	// log.Fatal skips deferred calls: benchmark returns, so that the stores stop.
	if err := benchmark(*kvnode, *etcdBin, *clients, *valueSize, *keys, *duration); err != nil {
		log.Fatal(err)
	}
}

func benchmark(kvnode, etcdBin string, clients, valueSize, keys int, duration time.Duration) error {
	dir, err := os.MkdirTemp("", "clusterbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ceilAddr := freeAddr("127.0.0.1")
	ceil := exec.Command(os.Args[0], "-serve-ceiling", ceilAddr)
	if err := ceil.Start(); err != nil {
		return err
	}
	defer ceil.Process.Kill()

	etcdURLs, stopEtcd := startEtcd(etcdBin, dir)
	defer stopEtcd()

	kv, err := harness.New(harness.Options{Binary: kvnode, Dir: filepath.Join(dir, "kvnode"), Insecure: true, NoProxies: true, ExtraArgs: []string{"--max-in-flight", "0"}})
	if err != nil {
		return err
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := kv.StartN(ctx, 3); err != nil {
		cancel()
		kv.DumpLogs(os.Stderr)
		return err
	}
	cancel()
	var kvURLs []string
	for _, m := range kv.Members() {
		kvURLs = append(kvURLs, m.API)
	}
	waitOK("http://" + ceilAddr + "/")

	value := bytes.Repeat([]byte("v"), valueSize)
	run := func(build func(c, i int) *http.Request) loadgen.Result {
		return loadgen.Run(loadgen.Config{Clients: clients, Duration: duration, NewRequest: build})
	}
	key := func(c, i int) int { return (c + i*clients) % keys }
	kvReq := func(method, query string) func(c, i int) *http.Request {
		return func(c, i int) *http.Request {
			var body io.Reader
			if method == "PUT" {
				body = bytes.NewReader(value)
			}
			req, _ := http.NewRequest(method, fmt.Sprintf("%s/v1/key/bench-%d%s", kvURLs[c%3], key(c, i), query), body)
			return req
		}
	}
	etcdReq := func(path string, serializable bool) func(c, i int) *http.Request {
		return func(c, i int) *http.Request {
			m := map[string]any{"key": base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "bench-%d", key(c, i)))}
			if path == "/v3/kv/put" {
				m["value"] = base64.StdEncoding.EncodeToString(value)
			}
			if serializable {
				m["serializable"] = true
			}
			b, _ := json.Marshal(m)
			req, _ := http.NewRequest("POST", etcdURLs[c%3]+path, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			return req
		}
	}
	ceilReq := func(c, i int) *http.Request {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/v1/key/bench-%d", ceilAddr, key(c, i)), nil)
		return req
	}

	// Fill both stores so that reads find values.
	fill := duration / 2
	loadgen.Run(loadgen.Config{Clients: clients, Duration: fill, NewRequest: kvReq("PUT", "")})
	loadgen.Run(loadgen.Config{Clients: clients, Duration: fill, NewRequest: etcdReq("/v3/kv/put", false)})

	type row struct {
		name   string
		kv, et loadgen.Result
	}
	rows := []row{
		{"durable writes", run(kvReq("PUT", "")), run(etcdReq("/v3/kv/put", false))},
		{"linearizable reads", run(kvReq("GET", "")), run(etcdReq("/v3/kv/range", false))},
		{"stale (serializable) reads", run(kvReq("GET", "?consistency=stale")), run(etcdReq("/v3/kv/range", true))},
	}
	ceiling := run(ceilReq)
	fmt.Printf("3 members each, %d clients spread over the members, %d-byte values, %d keys, %v per measurement, fsync on\n\n", clients, valueSize, keys, duration)
	fmt.Println("| workload | kvnode req/s | kvnode p50 / p99 | etcd req/s | etcd p50 / p99 | kvnode / etcd | kvnode / ceiling |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %v / %v | %.0f | %v / %v | %.2f× | %.0f%% |\n", r.name, r.kv.Rate, r.kv.P50, r.kv.P99, r.et.Rate, r.et.P50, r.et.P99, r.kv.Rate/r.et.Rate, 100*r.kv.Rate/ceiling.Rate)
		if r.kv.Errors+r.et.Errors > 0 {
			fmt.Printf("|  errors | %d | | %d | | | |\n", r.kv.Errors, r.et.Errors)
		}
	}
	fmt.Printf("| ceiling (constant handler, GET) | %.0f | %v / %v | | | | 100%% |\n", ceiling.Rate, ceiling.P50, ceiling.P99)
	return nil
}

// startEtcd runs a 3-member etcd cluster on loopback (127.0.0.2x) and
// returns its client URLs.
func startEtcd(bin, dir string) ([]string, func()) {
	var peers, clients []string
	var cmds []*exec.Cmd
	for i := 0; i < 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 20+i)
		clients = append(clients, "http://"+freeAddr(ip))
		peers = append(peers, fmt.Sprintf("e%d=http://%s", i, freeAddr(ip)))
	}
	initial := strings.Join(peers, ",")
	for i := 0; i < 3; i++ {
		peerURL := strings.SplitN(peers[i], "=", 2)[1]
		cmd := exec.Command(bin,
			"--name", fmt.Sprintf("e%d", i),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("etcd-%d", i)),
			"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", initial, "--initial-cluster-state", "new",
			"--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatalf("start etcd: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	for _, u := range clients {
		waitOK(u + "/health")
	}
	return clients, func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
}

func freeAddr(ip string) string {
	a, err := loadgen.FreeAddr(ip)
	if err != nil {
		log.Fatal(err)
	}
	return a
}

func waitOK(url string) {
	if err := loadgen.WaitOK(url); err != nil {
		log.Fatal(err)
	}
}
