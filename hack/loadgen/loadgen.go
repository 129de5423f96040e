// Package loadgen is the HTTP load generator the benchmarks share: N
// clients on keep-alive connections, each sending its next request as soon
// as the previous one is answered, for a fixed time. Every benchmark that
// compares two servers drives both with it, in the same run.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one measurement.
type Config struct {
	Clients  int
	Duration time.Duration
	// NewRequest builds request i of client c.
	NewRequest func(c, i int) *http.Request
	// OK tells a successful answer (default: status below 300).
	OK func(status int) bool
	// Transport, if set, is used instead of a fresh one (e.g. for TLS).
	Transport *http.Transport
}

// Result is what a measurement found.
type Result struct {
	Rate     float64 // successful requests per second
	P50, P99 time.Duration
	Errors   int64
}

// Run drives the load and returns the result.
func Run(cfg Config) Result {
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{}
	}
	tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = cfg.Clients, cfg.Clients
	defer tr.CloseIdleConnections()
	ok := cfg.OK
	if ok == nil {
		ok = func(s int) bool { return s < 300 }
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return RunFunc(cfg.Clients, cfg.Duration, func(_ context.Context, c, i int) error {
		resp, err := client.Do(cfg.NewRequest(c, i))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body) // drained for the connection's reuse
		resp.Body.Close()
		if !ok(resp.StatusCode) {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// RunFunc drives op (operation i of client c; any protocol) from clients
// goroutines for d, and returns the result. op's context has a 10 s
// timeout; the operations in flight when d ends finish.
func RunFunc(clients int, d time.Duration, op func(ctx context.Context, c, i int) error) Result {
	cfg := Config{Clients: clients, Duration: d}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration)
	defer cancel()
	var n, errs atomic.Int64
	lat := make([][]time.Duration, cfg.Clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				opCtx, opCancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := op(opCtx, c, i)
				opCancel()
				if err != nil {
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
	r := Result{Rate: float64(n.Load()) / el.Seconds(), Errors: errs.Load()}
	if len(all) > 0 {
		r.P50 = all[len(all)/2].Round(time.Microsecond)
		r.P99 = all[len(all)*99/100].Round(time.Microsecond)
	}
	return r
}

// ServeConstant serves the ceiling: a handler that drains the body and
// answers a constant. It blocks.
func ServeConstant(addr string) error {
	body := []byte("constant")
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(body)
	}))
}

// FreeAddr returns a free TCP address on ip.
func FreeAddr(ip string) (string, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitOK polls url until it answers 200, for up to 30 seconds.
func WaitOK(url string) error {
	for i := 0; i < 600; i++ {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s never answered 200", url)
}
