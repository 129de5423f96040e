// Command scalebench measures how a single kvnode's writes hold up as its
// data grows: N clients PUT new keys with fixed-size values (fsync on, as
// always) until the store holds -to bytes of values, and it reports the
// writes/s and p99 latency in each band of data size, then the restart
// time (start to /readyz: open the log, restore the snapshot, replay the
// log after it) and the RSS per GiB of values before and after the
// restart. Given -baseline, it runs the same load against that binary
// first, so that one run compares two builds:
//
//	go run ./hack/scalebench -kvnode bin/kvnode -baseline /path/to/old/kvnode -to 2000
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvstore-operator/kvstore-operator/hack/loadgen"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

const mb = 1e6

func main() {
	kvnode := flag.String("kvnode", "bin/kvnode", "kvnode binary")
	baseline := flag.String("baseline", "", "another kvnode binary to run first, for comparison (e.g. one built from main)")
	clients := flag.Int("clients", 16, "concurrent writers")
	valueSize := flag.Int("value", 1024, "value size in bytes")
	to := flag.Float64("to", 2000, "stop when the values add up to this many MB")
	marksFlag := flag.String("marks", "10,50,100,250,500,1000,1500,2000", "band edges in MB (the first band starts after -warmup)")
	warmup := flag.Float64("warmup", 2, "MB written before the first band, not measured")
	dir := flag.String("dir", "/var/tmp", "where the data directories go")
	flag.Parse()
	var marks []float64
	for _, f := range strings.Split(*marksFlag, ",") {
		m, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			log.Fatalf("-marks: %v", err)
		}
		if m <= *to {
			marks = append(marks, m)
		}
	}
	if len(marks) == 0 || marks[len(marks)-1] < *to {
		marks = append(marks, *to)
	}
	fmt.Printf("single node, fsync on, %d writers, %d-byte values, new keys only, bands up to %.0f MB of values\n\n", *clients, *valueSize, *to)
	var results []*result
	bins := []string{*kvnode}
	if *baseline != "" {
		bins = []string{*baseline, *kvnode}
	}
	for _, bin := range bins {
		r := run(bin, *dir, *clients, *valueSize, *warmup, marks)
		results = append(results, r)
		r.print()
	}
	if len(results) == 2 {
		b, n := results[0], results[1]
		fmt.Printf("\n| | baseline | this build |\n|---|---:|---:|\n")
		last := len(b.bands) - 1
		// The reference is the band that starts at 10 MB (the first one
		// when there is none): the one before it is short and warms up.
		ref := 0
		for i, bd := range b.bands {
			if bd.from == 10 {
				ref = i
			}
		}
		fmt.Printf("| writes/s at %s vs %s | %.0f%% | %.0f%% |\n", b.bands[last].name, b.bands[ref].name, 100*b.bands[last].rate/b.bands[ref].rate, 100*n.bands[last].rate/n.bands[ref].rate)
		fmt.Printf("| p99 at %s vs %s | %.1f× | %.1f× |\n", b.bands[last].name, b.bands[ref].name, float64(b.bands[last].p99)/float64(b.bands[ref].p99), float64(n.bands[last].p99)/float64(n.bands[ref].p99))
		worst := func(r *result) (p99, mx time.Duration) {
			for _, bd := range r.bands {
				p99, mx = max(p99, bd.p99), max(mx, bd.max)
			}
			return p99, mx
		}
		bp, bm := worst(b)
		np, nm := worst(n)
		fmt.Printf("| worst band's p99, longest write | %v, %v | %v, %v |\n", bp, bm, np, nm)
		fmt.Printf("| restart | %v | %v |\n", b.restart, n.restart)
		fmt.Printf("| RSS per GiB of values (before / after restart) | %.2f / %.2f GiB | %.2f / %.2f GiB |\n", b.rssPerGiB, b.rssPerGiBAfter, n.rssPerGiB, n.rssPerGiBAfter)
	}
}

type band struct {
	name     string
	from, to float64 // MB
	rate     float64
	p50, p99 time.Duration
	max      time.Duration
	errors   int64
}

type result struct {
	bin                       string
	bands                     []band
	restart                   time.Duration
	dataBytes                 float64
	rssPerGiB, rssPerGiBAfter float64
	disk                      int64
}

func (r *result) print() {
	fmt.Printf("%s\n\n| values | writes/s | p50 | p99 | max | errors |\n|---|---:|---:|---:|---:|---:|\n", r.bin)
	for _, b := range r.bands {
		fmt.Printf("| %s | %.0f | %v | %v | %v | %d |\n", b.name, b.rate, b.p50, b.p99, b.max, b.errors)
	}
	fmt.Printf("\nrestart (start to /readyz) with %.0f MB of values: %v; data directory %.0f MB; RSS per GiB of values %.2f GiB before the restart, %.2f GiB after\n\n",
		r.dataBytes/mb, r.restart, float64(r.disk)/mb, r.rssPerGiB, r.rssPerGiBAfter)
}

// key spreads the keys over the key space, as real ones are.
func key(i uint64) string {
	x := i * 0x9E3779B97F4A7C15
	x ^= x >> 29
	return fmt.Sprintf("k%016x", x)
}

func run(bin, dir string, clients, valueSize int, warmup float64, marks []float64) *result {
	dataDir, err := os.MkdirTemp(dir, "scalebench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)
	addr := freeAddr()
	args := []string{"--listen", addr, "--peer-listen", freeAddr(), "--data-dir", dataDir, "--bootstrap", clusterapi.BootstrapAlways, "--node-id", "bench", "--log-level", "warn", "--max-in-flight", "0", "--request-timeout", "30s", "--grpc-listen="}
	kv := startProc(bin, args...)
	// fail stops the node and removes its data before exiting: log.Fatal
	// runs no deferred calls.
	fail := func(format string, a ...any) {
		_ = kv.Process.Kill()
		_ = kv.Wait()
		_ = os.RemoveAll(dataDir)
		log.Fatalf(format, a...)
	}
	if err := waitReady("http://"+addr+"/readyz", time.Minute); err != nil {
		fail("%v", err)
	}
	value := bytes.Repeat([]byte("v"), valueSize)
	perMB := mb / float64(valueSize)
	edges := append([]float64{warmup}, marks...)
	writes := make([]uint64, len(edges)) // key count at each edge
	for i, e := range edges {
		writes[i] = uint64(e * perMB)
	}
	total := writes[len(writes)-1]
	starts := make([]atomic.Int64, len(edges)) // unix nanos when a band's first write began
	type sample struct {
		band int
		lat  time.Duration
	}
	lat := make([][]sample, clients)
	errs := make([]atomic.Int64, len(edges))
	var next atomic.Uint64
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	bandOf := func(i uint64) int {
		b, _ := slices.BinarySearch(writes, i+1)
		return b // 0: warmup; b: the band ending at edges[b]
	}
	url := "http://" + addr + "/v1/key/"
	var wg sync.WaitGroup
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
	go func() {
		for range progress.C {
			fmt.Fprintf(os.Stderr, "%s: %.0f MB\n", filepath.Base(bin), float64(next.Load())/perMB)
		}
	}()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				b := bandOf(i)
				t0 := time.Now()
				starts[b].CompareAndSwap(0, t0.UnixNano())
				req, _ := http.NewRequest(http.MethodPut, url+key(i), bytes.NewReader(value))
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 300 {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					errs[b].Add(1)
					continue
				}
				lat[c] = append(lat[c], sample{b, time.Since(t0)})
			}
		}(c)
	}
	wg.Wait()
	end := time.Now().UnixNano()
	r := &result{bin: bin, dataBytes: float64(total) * float64(valueSize)}
	for b := 1; b < len(edges); b++ {
		var ls []time.Duration
		for _, l := range lat {
			for _, s := range l {
				if s.band == b {
					ls = append(ls, s.lat)
				}
			}
		}
		slices.Sort(ls)
		stop := end
		if b+1 < len(edges) {
			stop = starts[b+1].Load()
		}
		bd := band{name: fmt.Sprintf("%.0f–%.0f MB", edges[b-1], edges[b]), from: edges[b-1], to: edges[b], errors: errs[b].Load()}
		if n := len(ls); n > 0 {
			bd.rate = float64(n) / (float64(stop-starts[b].Load()) / 1e9)
			bd.p50 = ls[n/2].Round(time.Microsecond)
			bd.p99 = ls[n*99/100].Round(time.Microsecond)
			bd.max = ls[n-1].Round(time.Microsecond)
		}
		r.bands = append(r.bands, bd)
	}
	tr.CloseIdleConnections()
	rss := rssBytes(kv.Process.Pid)
	r.rssPerGiB = float64(rss) / r.dataBytes
	// A clean stop (SIGTERM), then a restart on the same directory.
	_ = kv.Process.Signal(syscall.SIGTERM)
	_ = kv.Wait()
	r.disk = du(dataDir)
	t0 := time.Now()
	kv = startProc(bin, args...)
	defer func() { _ = kv.Process.Kill(); _ = kv.Wait() }()
	if err := waitReady("http://"+addr+"/readyz", 10*time.Minute); err != nil {
		fail("%v", err)
	}
	r.restart = time.Since(t0).Round(10 * time.Millisecond)
	// The last key must be there.
	resp, err := http.Get(url + key(total-1) + "?consistency=stale")
	if err != nil || resp.StatusCode != http.StatusOK {
		fail("the last key is missing after the restart: %v %v", err, resp)
	}
	resp.Body.Close()
	r.rssPerGiBAfter = float64(rssBytes(kv.Process.Pid)) / r.dataBytes
	return r
}

func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func du(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func waitReady(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within %v", url, d)
}

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
	go func() { // drain; show warnings and errors
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if s := sc.Text(); strings.Contains(s, `"level":"ERROR"`) || strings.Contains(s, `"level":"WARN"`) {
				fmt.Fprintln(os.Stderr, s)
			}
		}
	}()
	return cmd
}
