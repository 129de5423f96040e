package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
)

// grpcScript answers Put with the next of its errors (nil: success).
type grpcScript struct {
	pb.UnimplementedKeyValueServer
	mu    sync.Mutex
	errs  []error
	times []time.Time
}

func (s *grpcScript) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times = append(s.times, time.Now())
	if len(s.errs) == 0 {
		return &pb.PutResponse{}, nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return &pb.PutResponse{}, err
}

func withRetry(code codes.Code, d time.Duration) error {
	st, _ := status.New(code, "come back later").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	return st.Err()
}

func grpcServer(t *testing.T, s *grpcScript) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKeyValueServer(g, s)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return "http://" + l.Addr().String()
}

// Over gRPC, Unavailable and ResourceExhausted with RetryInfo are retried
// after the delay the server asks for; ResourceExhausted without it (a
// full volume) and PermissionDenied are not.
func TestGRPCRetries(t *testing.T) {
	s := &grpcScript{errs: []error{withRetry(codes.Unavailable, 300*time.Millisecond), withRetry(codes.ResourceExhausted, 0), nil}}
	c, err := client.New(client.Config{Protocol: client.GRPC, Endpoints: []string{grpcServer(t, s)}, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(context.Background(), "k", []byte("v")); err == nil || len(s.times) != 2 {
		// ResourceExhausted with a zero delay is not a rate: not retried.
		t.Fatalf("put: %v after %d calls", err, len(s.times))
	}
	if gap := s.times[1].Sub(s.times[0]); gap < 300*time.Millisecond {
		t.Errorf("retried %v after RetryInfo of 300ms", gap)
	}

	s = &grpcScript{errs: []error{withRetry(codes.ResourceExhausted, 100*time.Millisecond), status.Error(codes.PermissionDenied, "read-only")}}
	c, err = client.New(client.Config{Protocol: client.GRPC, Endpoints: []string{grpcServer(t, s)}, BaseBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Put(context.Background(), "k", []byte("v"))
	var e *client.Error
	if !errors.As(err, &e) || e.Code != codes.PermissionDenied || e.Status != 403 || len(s.times) != 2 {
		t.Fatalf("put: %v after %d calls", err, len(s.times))
	}
}
