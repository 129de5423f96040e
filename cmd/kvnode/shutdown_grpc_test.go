package main

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// No gRPC stream holds a shutdown: the health service answers Check only
// (a Watch stream never ends by itself, so a graceful stop would wait for
// it the whole --shutdown-timeout), and an idle gRPC connection does not
// delay the exit.
func TestGRPCDoesNotHoldShutdown(t *testing.T) {
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0", "--shutdown-timeout", "6s")
	p.waitReady(&http.Client{Timeout: 10 * time.Second})
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("health Watch: %v, want Unimplemented", err)
	}
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check: %v", err)
	}
	start := time.Now()
	p.signal(syscall.SIGTERM)
	p.wait(30 * time.Second)
	took := time.Since(start)
	t.Logf("SIGTERM to exit with one idle health watcher: %v", took.Round(100*time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("an idle gRPC connection held the shutdown for %v (--shutdown-timeout 6s, nothing in flight)", took.Round(100*time.Millisecond))
	}
}
