package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
)

// The gRPC front end of a real node with client authentication: the same
// clients, rights, limits and data as REST, each failure as its gRPC code
// with a one-line reason, the health service, and the REST metrics' shape.
func TestGRPC(t *testing.T) {
	dir := t.TempDir()
	ca := storeCA(t, dir)
	rules := filepath.Join(dir, access.RulesFile)
	writeRules(t, rules, access.Client{Name: "app", Access: access.ReadWrite, Prefix: "app/"}, access.Client{Name: "reports", Access: access.ReadOnly})
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ca", filepath.Join(dir, "ca.crt"),
		"--client-auth", "mtls", "--clients", rules, "--max-key-bytes", "16")
	if p.grpcAddr == "" {
		t.Fatalf("no gRPC address logged:\n%s", p.output())
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p.waitReady(https)

	conn := func(name string) *grpc.ClientConn {
		t.Helper()
		tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if name != "" {
			issue(t, ca, dir, name, certs.Leaf{CommonName: access.CommonName(name), Client: true, Lifetime: time.Hour})
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	app, reports, anonymous := pb.NewKeyValueClient(conn("app")), pb.NewKeyValueClient(conn("reports")), pb.NewKeyValueClient(conn(""))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Readiness: the health service follows /readyz.
	h := healthpb.NewHealthClient(conn(""))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: "keyvalue.v1.KeyValue"})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	want := func(what string, err error, code codes.Code, says string) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != code || !strings.Contains(st.Message(), says) || strings.Contains(st.Message(), "\n") {
			t.Errorf("%s: %v, want %v with %q", what, err, code, says)
		}
	}
	_, err := app.Put(ctx, &pb.PutRequest{Key: "app/a", Value: []byte("1")})
	want("app writes in its prefix", err, codes.OK, "")
	r, err := app.Get(ctx, &pb.GetRequest{Key: "app/a"})
	want("app reads", err, codes.OK, "")
	if string(r.GetValue()) != "1" {
		t.Errorf("app reads %q", r.GetValue())
	}
	// The same data as REST.
	if code, body := request(t, clientWith(t, dir, "app", pool), "GET", p.url("/v1/key/app/a"), ""); code != 200 || body != "1" {
		t.Errorf("the gRPC write over REST: %d %q", code, body)
	}
	r, err = reports.Get(ctx, &pb.GetRequest{Key: "app/a", Consistency: pb.Consistency_CONSISTENCY_STALE})
	want("reports reads stale", err, codes.OK, "")
	if string(r.GetValue()) != "1" {
		t.Errorf("reports reads %q", r.GetValue())
	}
	_, err = reports.Get(ctx, &pb.GetRequest{Key: "app/a", Consistency: pb.Consistency_CONSISTENCY_STRICT})
	want("reports reads strict", err, codes.OK, "")
	_, err = reports.Put(ctx, &pb.PutRequest{Key: "app/a", Value: []byte("2")})
	want("reports may not write", err, codes.PermissionDenied, "read-only")
	_, err = app.Delete(ctx, &pb.DeleteRequest{Key: "other"})
	want("app outside its prefix", err, codes.PermissionDenied, `only use keys that start with "app/"`)
	_, err = anonymous.Get(ctx, &pb.GetRequest{Key: "app/a"})
	want("no certificate", err, codes.Unauthenticated, "no client certificate")
	_, err = app.Get(ctx, &pb.GetRequest{Key: "app/missing"})
	want("a missing key", err, codes.NotFound, "")
	_, err = app.Put(ctx, &pb.PutRequest{Key: "app/" + strings.Repeat("k", 20), Value: []byte("1")})
	want("a key over --max-key-bytes", err, codes.InvalidArgument, "")
	_, err = app.Get(ctx, &pb.GetRequest{Key: "app/a", Consistency: 7})
	want("an unknown consistency", err, codes.InvalidArgument, "consistency")
	_, err = app.List(ctx, &pb.ListRequest{Limit: 5000})
	want("a limit over 1000", err, codes.InvalidArgument, "limit")
	_, err = app.Put(ctx, &pb.PutRequest{Key: "app/big", Value: make([]byte, 2<<20)})
	want("a message over the node's bound", err, codes.ResourceExhausted, "larger than max")
	l, err := app.List(ctx, &pb.ListRequest{})
	want("app lists", err, codes.OK, "")
	if strings.Join(l.GetKeys(), ",") != "app/a" {
		t.Errorf("app lists %v", l.GetKeys())
	}
	_, err = app.List(ctx, &pb.ListRequest{Prefix: "o"})
	want("app lists another prefix", err, codes.PermissionDenied, "only list keys")
	_, err = app.Delete(ctx, &pb.DeleteRequest{Key: "app/a"})
	want("app deletes", err, codes.OK, "")
	_, err = app.Delete(ctx, &pb.DeleteRequest{Key: "app/a"})
	want("app deletes a missing key", err, codes.OK, "")

	// Metrics in the REST metrics' shape.
	resp, err := https.Get(p.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`kvnode_grpc_requests_total{code="OK",method="Put"}`, `kvnode_grpc_requests_total{code="PermissionDenied",method="Put"}`, `kvnode_grpc_request_duration_seconds_count{method="Get"}`} {
		if !strings.Contains(string(b), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if strings.Contains(p.output(), "app/a") {
		t.Error("a key reached the log")
	}
}

// clientWith is an HTTPS client that presents client name's certificate
// (issued by the test before).
func clientWith(t *testing.T, dir, name string, pool *x509.CertPool) *http.Client {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
}

// Either front end can be turned off: --rest-api=false answers the REST
// key routes 501 with the reason while gRPC serves, probes and the
// metrics stay; --grpc-listen= serves no gRPC.
func TestFrontendsCanBeTurnedOff(t *testing.T) {
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0", "--rest-api=false")
	c := &http.Client{Timeout: 10 * time.Second}
	p.waitReady(c)
	if code, body := request(t, c, "PUT", p.url("/v1/key/a"), "1"); code != 501 || !strings.Contains(body, "--rest-api=false") {
		t.Errorf("REST off: PUT = %d %q", code, body)
	}
	if code, _ := request(t, c, "GET", p.url("/metrics"), ""); code != 200 {
		t.Errorf("REST off: /metrics = %d", code)
	}
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := pb.NewKeyValueClient(cc)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: "a", Value: []byte("1")}); err != nil {
		t.Fatalf("gRPC with REST off: %v", err)
	}

	q := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0", "--grpc-listen=")
	if q.grpcAddr != "" || strings.Contains(q.output(), "gRPC") {
		t.Errorf("--grpc-listen= still serves gRPC at %q", q.grpcAddr)
	}
}

// A client over its rate gets ResourceExhausted with RetryInfo over gRPC,
// from the bucket its REST requests draw on too: going over to the other
// front end gains it nothing. The health service is not throttled.
func TestGRPCThrottling(t *testing.T) {
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0",
		"--client-rate", "0.2", "--client-burst", "3")
	c := &http.Client{Timeout: 10 * time.Second}
	p.waitReady(c)
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := pb.NewKeyValueClient(cc)
	for i := 0; i < 2; i++ {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: "a", Value: []byte("1")}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	if code, _ := request(t, c, "GET", p.url("/v1/key/a"), ""); code != 200 {
		t.Fatalf("the third request of the burst, over REST: %d", code)
	}
	_, err = kv.Get(ctx, &pb.GetRequest{Key: "a"})
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "too many requests") {
		t.Fatalf("over the rate: %v", err)
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	if delay < time.Second || delay > 5*time.Second {
		t.Errorf("RetryInfo %v; want the seconds until a token, rounded up (5 at 0.2/s)", delay)
	}
	if code, _ := request(t, c, "GET", p.url("/v1/key/a"), ""); code != 429 {
		t.Errorf("REST after the gRPC calls emptied the bucket: %d, want 429", code)
	}
	for i := 0; i < 5; i++ {
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health, throttled: %v", err)
		}
	}
}
