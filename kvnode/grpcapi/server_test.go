package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
)

// failing is a store whose every call fails with err, or blocks until
// released: the failures a real cluster gives only by chance (the real
// node's answers are tested in cmd/kvnode, TestGRPC).
type failing struct {
	err     error
	release chan struct{}
}

func (f failing) wait(ctx context.Context) error {
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.err
}
func (f failing) Put(ctx context.Context, _ string, _ []byte) error { return f.wait(ctx) }
func (f failing) Delete(ctx context.Context, _ string) error        { return f.wait(ctx) }
func (f failing) Get(ctx context.Context, _ string, _ core.Consistency) ([]byte, error) {
	return nil, f.wait(ctx)
}
func (f failing) List(ctx context.Context, _, _ string, _ int, _ core.Consistency) ([]string, string, error) {
	return nil, "", f.wait(ctx)
}
func (f failing) Limits() core.Limits { return core.DefaultLimits }

func serve(t *testing.T, cfg grpcapi.Config) pb.KeyValueClient {
	t.Helper()
	l := bufconn.Listen(1 << 20)
	s, _ := grpcapi.NewServer(cfg)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewKeyValueClient(cc)
}

// Each store error becomes its code; the transient ones carry RetryInfo.
func TestErrorsBecomeCodes(t *testing.T) {
	for _, c := range []struct {
		err   error
		code  codes.Code
		retry bool
	}{
		{core.ErrNoSuchKey, codes.NotFound, false},
		{core.ErrEmptyKey, codes.InvalidArgument, false},
		{fmt.Errorf("%w: 2000 bytes", core.ErrValueTooLarge), codes.InvalidArgument, false},
		{core.ErrNoSpace, codes.ResourceExhausted, false},
		{fmt.Errorf("%w: no leader is known", core.ErrUnavailable), codes.Unavailable, true},
		{core.ErrNotLeader, codes.Unavailable, true},
		{core.ErrIndeterminate, codes.DeadlineExceeded, false},
		{context.DeadlineExceeded, codes.DeadlineExceeded, false},
		{errors.New("disk on fire"), codes.Internal, false},
	} {
		kv := serve(t, grpcapi.Config{KV: failing{err: c.err}})
		_, err := kv.Get(context.Background(), &pb.GetRequest{Key: "k"})
		if status.Code(err) != c.code {
			t.Errorf("%v: %v, want %v", c.err, err, c.code)
		}
		d, ok := retryDelay(err)
		if ok != c.retry || (ok && d != time.Second) {
			t.Errorf("%v: retry info %v %v, want %v", c.err, d, ok, c.retry)
		}
	}
}

// A call over the in-flight bound is shed at once with Unavailable and
// RetryInfo; a call that outlives the node's deadline ends with
// DeadlineExceeded.
func TestShedAndDeadline(t *testing.T) {
	release := make(chan struct{})
	kv := serve(t, grpcapi.Config{KV: failing{release: release}, Gate: shed.New(1), Timeout: 300 * time.Millisecond})
	first := make(chan error, 1)
	go func() {
		_, err := kv.Put(context.Background(), &pb.PutRequest{Key: "k"})
		first <- err
	}()
	time.Sleep(100 * time.Millisecond) // the first call holds the only slot
	_, err := kv.Put(context.Background(), &pb.PutRequest{Key: "k"})
	if d, ok := retryDelay(err); status.Code(err) != codes.Unavailable || !ok || d != time.Second {
		t.Errorf("over the bound: %v (retry %v %v)", err, d, ok)
	}
	if err := <-first; status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("past the node's deadline: %v", err)
	}
	close(release)
}

// retryDelay returns the delay a status's RetryInfo asks for, if any.
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
