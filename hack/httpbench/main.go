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
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	kv := startProc(*kvnode, "--listen", kvAddr, "--peer-listen", peerAddr, "--data-dir", dataDir, "--bootstrap", "--node-id", "bench", "--log-level", "warn", "--max-in-flight", "0")
	defer kv.Process.Kill()
	waitOK("http://" + ceilAddr + "/")
	waitOK("http://" + kvAddr + "/readyz")

	value := bytes.Repeat([]byte("v"), *valueSize)
	g := &loadgen{clients: *clients, keys: *keys, duration: *duration, value: value}
	// Fill the key set so that GETs find values.
	g.run("PUT", "http://"+kvAddr+"/v1/key/bench-", 2*time.Second)

	type row struct {
		name string
		r    result
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
		base := ceilGet.rate
		if strings.Contains(r.name, "PUT") {
			base = ceilPut.rate
		}
		fmt.Printf("| %s | %.0f | %v | %v | %d | %.0f%% |\n", r.name, r.r.rate, r.r.p50, r.r.p99, r.r.errors, 100*r.r.rate/base)
	}
}

func runCeiling(addr string) {
	body := []byte("constant")
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	})}
	log.Fatal(srv.ListenAndServe())
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
	for i := 0; i < 300; i++ {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("%s never answered 200", url)
}

type loadgen struct {
	clients  int
	keys     int
	duration time.Duration
	value    []byte
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
}

func (g *loadgen) run(method, prefix string, d time.Duration, suffix ...string) result {
	if d == 0 {
		d = g.duration
	}
	tr := &http.Transport{MaxIdleConnsPerHost: g.clients, MaxConnsPerHost: g.clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n, errs atomic.Int64
	lat := make([][]time.Duration, g.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < g.clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; ctx.Err() == nil; i += g.clients {
				url := fmt.Sprintf("%s%d%s", prefix, i%g.keys, strings.Join(suffix, ""))
				var body io.Reader
				if method == "PUT" {
					body = bytes.NewReader(g.value)
				}
				req, _ := http.NewRequest(method, url, body)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					errs.Add(1)
					continue
				}
				lat[c] = append(lat[c], time.Since(t0))
				n.Add(1)
			}
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{rate: float64(n.Load()) / el.Seconds(), errors: errs.Load()}
	if len(all) > 0 {
		r.p50 = all[len(all)/2].Round(time.Microsecond)
		r.p99 = all[len(all)*99/100].Round(time.Microsecond)
	}
	return r
}
