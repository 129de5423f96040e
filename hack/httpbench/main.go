// Command httpbench measures a kvnode's HTTP throughput against the
// machine's ceiling in one run: a bare net/http server that answers every
// request with a constant, started as its own process like the kvnode. The
// same load generator (N keep-alive clients, fixed-size values) drives
// both, so the ratio means something on a shared, noisy machine.
//
//	go run ./hack/httpbench -kvnode bin/kvnode -clients 32 -value 128 -duration 5s
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/kvstore-operator/kvstore-operator/hack/loadgen"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

func main() {
	serveCeiling := flag.String("serve-ceiling", "", "internal: serve the constant handler on this address")
	kvnode := flag.String("kvnode", "bin/kvnode", "kvnode binary")
	clients := flag.Int("clients", 32, "concurrent clients")
	valueSize := flag.Int("value", 128, "value size in bytes")
	keys := flag.Int("keys", 10000, "distinct keys")
	duration := flag.Duration("duration", 5*time.Second, "length of each measurement")
	flag.Parse()
	if *serveCeiling != "" {
		runCeiling(*serveCeiling)
		return
	}
	dataDir, err := os.MkdirTemp("", "httpbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)

	ceilAddr := freeAddr()
	ceil := startProc(os.Args[0], "-serve-ceiling", ceilAddr)
	defer ceil.Process.Kill()
	kvAddr, peerAddr := freeAddr(), freeAddr()
	kv := startProc(*kvnode, "--listen", kvAddr, "--peer-listen", peerAddr, "--data-dir", dataDir, "--bootstrap", clusterapi.BootstrapAlways, "--node-id", "bench", "--log-level", "warn", "--max-in-flight", "0", "--grpc-listen=")
	defer kv.Process.Kill()
	waitOK("http://" + ceilAddr + "/")
	waitOK("http://" + kvAddr + "/readyz")

	value := bytes.Repeat([]byte("v"), *valueSize)
	g := &bench{clients: *clients, keys: *keys, duration: *duration, value: value}
	// Fill the key set so that GETs find values.
	g.run("PUT", "http://"+kvAddr+"/v1/key/bench-", 2*time.Second)

	type row struct {
		name string
		r    loadgen.Result
	}
	var rows []row
	ceilGet := g.run("GET", "http://"+ceilAddr+"/v1/key/bench-", 0)
	rows = append(rows, row{"ceiling (constant handler), GET", ceilGet})
	ceilPut := g.run("PUT", "http://"+ceilAddr+"/v1/key/bench-", 0)
	rows = append(rows, row{"ceiling (constant handler), PUT", ceilPut})
	rows = append(rows, row{"kvnode PUT (durable: fsync before 201)", g.run("PUT", "http://"+kvAddr+"/v1/key/bench-", 0)})
	rows = append(rows, row{"kvnode GET (linearizable)", g.run("GET", "http://"+kvAddr+"/v1/key/bench-", 0)})
	rows = append(rows, row{"kvnode GET ?consistency=stale", g.run("GET", "http://"+kvAddr+"/v1/key/bench-", 0, "?consistency=stale")})

	fmt.Printf("%d clients, %d-byte values, %d keys, %v per row, GOMAXPROCS of the machine: both servers on this host\n\n", *clients, *valueSize, *keys, *duration)
	fmt.Println("| workload | req/s | p50 | p99 | errors | vs ceiling |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		base := ceilGet.Rate
		if strings.Contains(r.name, "PUT") {
			base = ceilPut.Rate
		}
		fmt.Printf("| %s | %.0f | %v | %v | %d | %.0f%% |\n", r.name, r.r.Rate, r.r.P50, r.r.P99, r.r.Errors, 100*r.r.Rate/base)
	}
}

func runCeiling(addr string) { log.Fatal(loadgen.ServeConstant(addr)) }

func freeAddr() string {
	a, err := loadgen.FreeAddr("127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	return a
}

func startProc(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", bin, err)
	}
	go func() { // drain, keep only errors visible
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && (rec["level"] == "ERROR" || rec["@level"] == "error") {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	return cmd
}

func waitOK(url string) {
	if err := loadgen.WaitOK(url); err != nil {
		log.Fatal(err)
	}
}

type bench struct {
	clients  int
	keys     int
	duration time.Duration
	value    []byte
}

func (g *bench) run(method, prefix string, d time.Duration, suffix ...string) loadgen.Result {
	if d == 0 {
		d = g.duration
	}
	return loadgen.Run(loadgen.Config{Clients: g.clients, Duration: d, NewRequest: func(c, i int) *http.Request {
		url := fmt.Sprintf("%s%d%s", prefix, (c+i*g.clients)%g.keys, strings.Join(suffix, ""))
		var body io.Reader
		if method == "PUT" {
			body = bytes.NewReader(g.value)
		}
		req, _ := http.NewRequest(method, url, body)
		return req
	}})
}
