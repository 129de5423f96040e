// Command cluster compares a 3-member kvnode cluster with a 3-member etcd
// cluster on the same machine, in one run, with the same load generator:
// N clients spread over the three members as a Service would spread them
// (client c talks to member c mod 3), 128-byte values, fsync on in both,
// no TLS in either, so that the comparison is of the stores, not of the
// handshakes.
//
// Like is compared with like: kvnode over gRPC against etcd through its
// native gRPC client (go.etcd.io/etcd/client/v3), each with one
// connection per member; kvnode's strict reads (a quorum round per read)
// against etcd's linearizable reads (a quorum round per read, ReadIndex);
// kvnode's lease reads in a row of their own; stale against serializable.
// Then kvnode's REST against its gRPC, and etcd's JSON gateway against its
// gRPC. A server that answers a constant, over gRPC and over HTTP, gives
// the machine's ceiling for each protocol.
//
//	cd hack/bench && go run ./cluster -kvnode ../../bin/kvnode -etcd "$(../k8s-binaries.sh etcd | tail -1)/etcd"
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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvstore-operator/kvstore-operator/hack/loadgen"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

func main() {
	serveCeiling := flag.String("serve-ceiling", "", "internal: serve the constant HTTP handler on this address")
	serveGRPCCeiling := flag.String("serve-grpc-ceiling", "", "internal: serve a constant KeyValue gRPC server on this address")
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
	if *serveGRPCCeiling != "" {
		log.Fatal(serveConstantGRPC(*serveGRPCCeiling))
	}
	if *etcdBin == "" {
		log.Fatal("-etcd is required")
	}
	// log.Fatal skips deferred calls: benchmark returns, so that the stores stop.
	if err := benchmark(*kvnode, *etcdBin, *clients, *valueSize, *keys, *duration); err != nil {
		log.Fatal(err)
	}
}

type row struct {
	name        string
	left, right loadgen.Result
}

func benchmark(kvnode, etcdBin string, clients, valueSize, keys int, duration time.Duration) error {
	dir, err := os.MkdirTemp("", "clusterbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Everything started here lives until the benchmark returns.
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	ceilAddr, grpcCeilAddr := freeAddr("127.0.0.1"), freeAddr("127.0.0.1")
	for _, args := range [][]string{{"-serve-ceiling", ceilAddr}, {"-serve-grpc-ceiling", grpcCeilAddr}} {
		ceil := exec.Command(os.Args[0], args...)
		if err := ceil.Start(); err != nil {
			return err
		}
		closers = append(closers, func() { _ = ceil.Process.Kill() })
	}

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
	var kvGRPC []pb.KeyValueClient
	for _, m := range kv.Members() {
		kvURLs = append(kvURLs, m.API)
		cc, err := grpc.NewClient("passthrough:///"+m.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		closers = append(closers, func() { _ = cc.Close() })
		kvGRPC = append(kvGRPC, pb.NewKeyValueClient(cc))
	}
	var etcd []*clientv3.Client
	for _, u := range etcdURLs {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		closers = append(closers, func() { _ = c.Close() })
		etcd = append(etcd, c)
	}
	waitOK("http://" + ceilAddr + "/")
	ceilConn, err := grpc.NewClient("passthrough:///"+grpcCeilAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer ceilConn.Close()
	grpcCeil := pb.NewKeyValueClient(ceilConn)

	value := bytes.Repeat([]byte("v"), valueSize)
	key := func(c, i int) string { return fmt.Sprintf("bench-%d", (c+i*clients)%keys) }
	run := func(op func(ctx context.Context, c, i int) error) loadgen.Result {
		return loadgen.RunFunc(clients, duration, op)
	}

	// kvnode over gRPC.
	kvPut := func(ctx context.Context, c, i int) error {
		_, err := kvGRPC[c%3].Put(ctx, &pb.PutRequest{Key: key(c, i), Value: value})
		return err
	}
	kvGet := func(cons pb.Consistency) func(ctx context.Context, c, i int) error {
		return func(ctx context.Context, c, i int) error {
			_, err := kvGRPC[c%3].Get(ctx, &pb.GetRequest{Key: key(c, i), Consistency: cons})
			return err
		}
	}
	// etcd through its native client.
	etPut := func(ctx context.Context, c, i int) error {
		_, err := etcd[c%3].Put(ctx, key(c, i), string(value))
		return err
	}
	etGet := func(serializable bool) func(ctx context.Context, c, i int) error {
		return func(ctx context.Context, c, i int) error {
			var opts []clientv3.OpOption
			if serializable {
				opts = append(opts, clientv3.WithSerializable())
			}
			_, err := etcd[c%3].Get(ctx, key(c, i), opts...)
			return err
		}
	}
	mixed := func(put, get func(ctx context.Context, c, i int) error) func(ctx context.Context, c, i int) error {
		return func(ctx context.Context, c, i int) error {
			if i%10 == 0 {
				return put(ctx, c, i)
			}
			return get(ctx, c, i)
		}
	}
	// kvnode's REST and etcd's JSON gateway, over HTTP.
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}, Timeout: 10 * time.Second}
	do := func(req *http.Request) error {
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	restOp := func(method, query string) func(ctx context.Context, c, i int) error {
		return func(ctx context.Context, c, i int) error {
			var body io.Reader
			if method == http.MethodPut {
				body = bytes.NewReader(value)
			}
			req, _ := http.NewRequestWithContext(ctx, method, kvURLs[c%3]+"/v1/key/"+key(c, i)+query, body)
			return do(req)
		}
	}
	jsonOp := func(path string, serializable bool) func(ctx context.Context, c, i int) error {
		return func(ctx context.Context, c, i int) error {
			m := map[string]any{"key": base64.StdEncoding.EncodeToString([]byte(key(c, i)))}
			if path == "/v3/kv/put" {
				m["value"] = base64.StdEncoding.EncodeToString(value)
			}
			if serializable {
				m["serializable"] = true
			}
			b, _ := json.Marshal(m)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, etcdURLs[c%3]+path, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			return do(req)
		}
	}

	// Fill both stores with every key, so that every read finds a value
	// (etcd answers a missing key with an empty range, kvnode NotFound).
	if err := fill(clients, keys, func(ctx context.Context, k int) error {
		_, err := kvGRPC[k%3].Put(ctx, &pb.PutRequest{Key: fmt.Sprintf("bench-%d", k), Value: value})
		return err
	}); err != nil {
		return fmt.Errorf("fill kvnode: %w", err)
	}
	if err := fill(clients, keys, func(ctx context.Context, k int) error {
		_, err := etcd[k%3].Put(ctx, fmt.Sprintf("bench-%d", k), string(value))
		return err
	}); err != nil {
		return fmt.Errorf("fill etcd: %w", err)
	}

	fmt.Printf("3 members each, %d clients spread over the members, %d-byte values, %d keys, %v per measurement, fsync on, no TLS\n\n", clients, valueSize, keys, duration)
	grpcCeiling := run(func(ctx context.Context, c, i int) error {
		_, err := grpcCeil.Get(ctx, &pb.GetRequest{Key: key(c, i)})
		return err
	})
	table("kvnode over gRPC", "etcd (native gRPC client)", grpcCeiling, []row{
		{"durable writes", run(kvPut), run(etPut)},
		{"strict reads (a leadership confirmation each, batched) / etcd linearizable", run(kvGet(pb.Consistency_CONSISTENCY_STRICT)), run(etGet(false))},
		{"lease reads (kvnode's default linearizable) / etcd linearizable", run(kvGet(pb.Consistency_CONSISTENCY_LINEARIZABLE)), run(etGet(false))},
		{"stale / serializable reads", run(kvGet(pb.Consistency_CONSISTENCY_STALE)), run(etGet(true))},
		{"90% strict reads, 10% writes / etcd linearizable", run(mixed(kvPut, kvGet(pb.Consistency_CONSISTENCY_STRICT))), run(mixed(etPut, etGet(false)))},
	})
	httpCeiling := run(func(ctx context.Context, c, i int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ceilAddr+"/v1/key/"+key(c, i), nil)
		return do(req)
	})
	table("kvnode REST", "kvnode gRPC", httpCeiling, []row{
		{"durable writes", run(restOp(http.MethodPut, "")), run(kvPut)},
		{"strict reads", run(restOp(http.MethodGet, "?consistency=strict")), run(kvGet(pb.Consistency_CONSISTENCY_STRICT))},
		{"lease reads", run(restOp(http.MethodGet, "")), run(kvGet(pb.Consistency_CONSISTENCY_LINEARIZABLE))},
		{"stale reads", run(restOp(http.MethodGet, "?consistency=stale")), run(kvGet(pb.Consistency_CONSISTENCY_STALE))},
	})
	table("etcd JSON gateway", "etcd native gRPC", httpCeiling, []row{
		{"writes", run(jsonOp("/v3/kv/put", false)), run(etPut)},
		{"linearizable reads", run(jsonOp("/v3/kv/range", false)), run(etGet(false))},
		{"serializable reads", run(jsonOp("/v3/kv/range", true)), run(etGet(true))},
	})
	return nil
}

// fill writes keys 0 to n-1 once each, from clients goroutines.
func fill(clients, n int, put func(ctx context.Context, k int) error) error {
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		go func(c int) {
			for k := c; k < n; k += clients {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := put(ctx, k)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}(c)
	}
	var first error
	for c := 0; c < clients; c++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// table prints rows comparing left with right; the ceiling (of left's
// protocol) is in the last column.
func table(left, right string, ceiling loadgen.Result, rows []row) {
	fmt.Printf("| workload | %s req/s | p50 / p99 | %s req/s | p50 / p99 | %s / %s | %s / ceiling |\n", left, right, left, right, left)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %v / %v | %.0f | %v / %v | %.2f× | %.0f%% |\n", r.name, r.left.Rate, r.left.P50, r.left.P99, r.right.Rate, r.right.P50, r.right.P99, r.left.Rate/r.right.Rate, 100*r.left.Rate/ceiling.Rate)
		if r.left.Errors+r.right.Errors > 0 {
			fmt.Printf("|  errors | %d | | %d | | | |\n", r.left.Errors, r.right.Errors)
		}
	}
	fmt.Printf("| ceiling (a constant answer, same protocol as %s) | %.0f | %v / %v | | | | 100%% |\n\n", left, ceiling.Rate, ceiling.P50, ceiling.P99)
}

// constant is the gRPC ceiling: a KeyValue server that answers at once.
type constant struct{ pb.UnimplementedKeyValueServer }

func (constant) Get(context.Context, *pb.GetRequest) (*pb.GetResponse, error) {
	return &pb.GetResponse{Value: []byte("constant")}, nil
}

func serveConstantGRPC(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	pb.RegisterKeyValueServer(s, constant{})
	return s.Serve(l)
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
