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
	"slices"
	"strconv"
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
	only := flag.String("only", "", "run only the rows whose name contains this")
	profile := flag.String("profile", "", "directory to write the kvnode members' CPU profiles to, one per member and row of the first table")
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
	if err := benchmark(*kvnode, *etcdBin, *clients, *valueSize, *keys, *duration, *only, *profile); err != nil {
		log.Fatal(err)
	}
}

type row struct {
	name        string
	left, right measured
}

// measured is a load's result and the CPU time its servers spent per
// successful request: on a machine where the servers and the load
// generator share the cores, throughput follows CPU per request.
type measured struct {
	loadgen.Result
	cpuPerOp time.Duration
}

func benchmark(kvnode, etcdBin string, clients, valueSize, keys int, duration time.Duration, only, profileDir string) error {
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

	etcdURLs, etcdPids, stopEtcd := startEtcd(etcdBin, dir)
	defer stopEtcd()

	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
	}
	kv, err := harness.New(harness.Options{Binary: kvnode, Dir: filepath.Join(dir, "kvnode"), Insecure: true, NoProxies: true, Profiles: profileDir != "", ExtraArgs: []string{"--max-in-flight", "0"}})
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
	var kvPids []int
	var pprofAddrs []string
	for _, m := range kv.Members() {
		kvPids = append(kvPids, m.Pid())
		if m.Pprof != "" {
			pprofAddrs = append(pprofAddrs, m.Pprof)
		}
	}
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
	// on runs op against the servers pids (nil: none of the stores) and,
	// when profile names a row, records the kvnode members' CPU profiles
	// meanwhile.
	on := func(pids []int, profile string, op func(ctx context.Context, c, i int) error) measured {
		before := cpuTime(pids)
		done := make(chan struct{})
		if profile != "" && len(pprofAddrs) > 0 {
			go func() {
				defer close(done)
				captureProfiles(profileDir, profile, pprofAddrs, duration)
			}()
		} else {
			close(done)
		}
		r := loadgen.RunFunc(clients, duration, op)
		<-done
		m := measured{Result: r}
		if n := r.Rate * duration.Seconds(); n > 0 {
			m.cpuPerOp = time.Duration(float64(cpuTime(pids)-before) / n)
		}
		return m
	}
	run := func(op func(ctx context.Context, c, i int) error) measured { return on(nil, "", op) }
	kvRun := func(profile string, op func(ctx context.Context, c, i int) error) measured {
		return on(kvPids, profile, op)
	}
	etRun := func(op func(ctx context.Context, c, i int) error) measured { return on(etcdPids, "", op) }
	// pick runs a row only if its name contains only.
	pick := func(rows ...func() row) []row {
		var out []row
		for _, r := range rows {
			if rw := r(); rw.name != "" {
				out = append(out, rw)
			}
		}
		return out
	}
	rowOf := func(name string, left, right func() measured) func() row {
		return func() row {
			if !strings.Contains(name, only) {
				return row{}
			}
			return row{name, left(), right()}
		}
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
	kvW := func(p string, op func(ctx context.Context, c, i int) error) func() measured {
		return func() measured { return kvRun(p, op) }
	}
	etW := func(op func(ctx context.Context, c, i int) error) func() measured {
		return func() measured { return etRun(op) }
	}
	table("kvnode over gRPC", "etcd (native gRPC client)", grpcCeiling, pick(
		rowOf("durable writes", kvW("writes", kvPut), etW(etPut)),
		rowOf("strict reads (a leadership confirmation each, batched) / etcd linearizable", kvW("strict", kvGet(pb.Consistency_CONSISTENCY_STRICT)), etW(etGet(false))),
		rowOf("lease reads (kvnode's default linearizable) / etcd linearizable", kvW("lease", kvGet(pb.Consistency_CONSISTENCY_LINEARIZABLE)), etW(etGet(false))),
		rowOf("stale / serializable reads", kvW("stale", kvGet(pb.Consistency_CONSISTENCY_STALE)), etW(etGet(true))),
		rowOf("90% strict reads, 10% writes / etcd linearizable", kvW("mixed", mixed(kvPut, kvGet(pb.Consistency_CONSISTENCY_STRICT))), etW(mixed(etPut, etGet(false)))),
	))
	// What the forwarding from followers costs: the same writes, each
	// client sending straight to the leader (kvnode/client's LeaderWrites).
	info, err := kv.Info(context.Background())
	if err != nil {
		return err
	}
	leader := -1
	for i, m := range kv.Members() {
		if m.ID == info.Leader {
			leader = i
		}
	}
	if leader < 0 {
		return fmt.Errorf("no leader among the members: %+v", info)
	}
	kvPutLeader := func(ctx context.Context, c, i int) error {
		_, err := kvGRPC[leader].Put(ctx, &pb.PutRequest{Key: key(c, i), Value: value})
		return err
	}
	table("kvnode gRPC, writes straight to the leader", "kvnode gRPC, writes spread over the members", grpcCeiling, pick(
		rowOf("durable writes (LeaderWrites)", kvW("", kvPutLeader), kvW("", kvPut)),
	))
	// The Postgres mode against the Raft mode: the same three kvnodes,
	// their log in one PostgreSQL server instead of Raft.
	pgRows := []string{"postgres: durable writes", "postgres: linearizable reads / strict", "postgres: linearizable reads / lease", "postgres: stale reads"}
	if slices.ContainsFunc(pgRows, func(n string) bool { return strings.Contains(n, only) }) {
		pm, err := startPostgresMode(kvnode, dir)
		if err != nil {
			return fmt.Errorf("postgres mode: %w", err)
		}
		defer pm.close()
		if err := fill(clients, keys, func(ctx context.Context, k int) error {
			_, err := pm.clients[k%3].Put(ctx, &pb.PutRequest{Key: fmt.Sprintf("bench-%d", k), Value: value})
			return err
		}); err != nil {
			return fmt.Errorf("fill the postgres mode: %w", err)
		}
		pgPids := pm.pids()
		pgW := func(op func(ctx context.Context, c, i int) error) func() measured {
			return func() measured { return on(pgPids, "", op) }
		}
		pgPut := func(ctx context.Context, c, i int) error {
			_, err := pm.clients[c%3].Put(ctx, &pb.PutRequest{Key: key(c, i), Value: value})
			return err
		}
		pgGet := func(cons pb.Consistency) func(ctx context.Context, c, i int) error {
			return func(ctx context.Context, c, i int) error {
				_, err := pm.clients[c%3].Get(ctx, &pb.GetRequest{Key: key(c, i), Consistency: cons})
				return err
			}
		}
		fmt.Println("Server CPU per request counts PostgreSQL's processes on the left, the three kvnodes' on both sides.")
		fmt.Println()
		table("kvnode, log in PostgreSQL", "kvnode, Raft", grpcCeiling, pick(
			rowOf(pgRows[0], pgW(pgPut), kvW("", kvPut)),
			rowOf(pgRows[1], pgW(pgGet(pb.Consistency_CONSISTENCY_STRICT)), kvW("", kvGet(pb.Consistency_CONSISTENCY_STRICT))),
			rowOf(pgRows[2], pgW(pgGet(pb.Consistency_CONSISTENCY_LINEARIZABLE)), kvW("", kvGet(pb.Consistency_CONSISTENCY_LINEARIZABLE))),
			rowOf(pgRows[3], pgW(pgGet(pb.Consistency_CONSISTENCY_STALE)), kvW("", kvGet(pb.Consistency_CONSISTENCY_STALE))),
		))
	}
	if only != "" {
		return nil
	}
	httpCeiling := run(func(ctx context.Context, c, i int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ceilAddr+"/v1/key/"+key(c, i), nil)
		return do(req)
	})
	table("kvnode REST", "kvnode gRPC", httpCeiling, pick(
		rowOf("durable writes", kvW("", restOp(http.MethodPut, "")), kvW("", kvPut)),
		rowOf("strict reads", kvW("", restOp(http.MethodGet, "?consistency=strict")), kvW("", kvGet(pb.Consistency_CONSISTENCY_STRICT))),
		rowOf("lease reads", kvW("", restOp(http.MethodGet, "")), kvW("", kvGet(pb.Consistency_CONSISTENCY_LINEARIZABLE))),
		rowOf("stale reads", kvW("", restOp(http.MethodGet, "?consistency=stale")), kvW("", kvGet(pb.Consistency_CONSISTENCY_STALE))),
	))
	table("etcd JSON gateway", "etcd native gRPC", httpCeiling, pick(
		rowOf("writes", etW(jsonOp("/v3/kv/put", false)), etW(etPut)),
		rowOf("linearizable reads", etW(jsonOp("/v3/kv/range", false)), etW(etGet(false))),
		rowOf("serializable reads", etW(jsonOp("/v3/kv/range", true)), etW(etGet(true))),
	))
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
func table(left, right string, ceiling measured, rows []row) {
	fmt.Printf("| workload | %s req/s | p50 / p99 | server CPU per request | %s req/s | p50 / p99 | server CPU per request | %s / %s | %s / ceiling |\n", left, right, left, right, left)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %v / %v | %v | %.0f | %v / %v | %v | %.2f× | %.0f%% |\n", r.name, r.left.Rate, r.left.P50, r.left.P99, r.left.cpuPerOp.Round(time.Microsecond), r.right.Rate, r.right.P50, r.right.P99, r.right.cpuPerOp.Round(time.Microsecond), r.left.Rate/r.right.Rate, 100*r.left.Rate/ceiling.Rate)
		if r.left.Errors+r.right.Errors > 0 {
			fmt.Printf("|  errors | %d | | | %d | | | | |\n", r.left.Errors, r.right.Errors)
		}
	}
	fmt.Printf("| ceiling (a constant answer, same protocol as %s) | %.0f | %v / %v | | | | | | 100%% |\n\n", left, ceiling.Rate, ceiling.P50, ceiling.P99)
}

// captureProfiles writes each member's CPU profile over d (less a margin,
// so that it ends within the row) to dir/<row>-<member>.pprof.
func captureProfiles(dir, row string, addrs []string, d time.Duration) {
	secs := max(1, int((d-time.Second)/time.Second))
	done := make(chan struct{}, len(addrs))
	for i, a := range addrs {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a, secs))
			if err != nil {
				log.Printf("profile of member %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", row, i)))
			if err != nil {
				log.Print(err)
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		}()
	}
	for range addrs {
		<-done
	}
}

// cpuTime is the user and system CPU time the processes have used so far
// (from /proc; 0 where it cannot be read).
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: fields are
		// counted after its closing parenthesis. utime and stime are
		// fields 14 and 15, in clock ticks of 10 ms.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		ut, uerr := strconv.ParseInt(f[11], 10, 64)
		st, serr := strconv.ParseInt(f[12], 10, 64)
		if uerr == nil && serr == nil {
			total += time.Duration(ut+st) * 10 * time.Millisecond
		}
	}
	return total
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
func startEtcd(bin, dir string) ([]string, []int, func()) {
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
	var pids []int
	for _, c := range cmds {
		pids = append(pids, c.Process.Pid)
	}
	return clients, pids, func() {
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
