package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/rest"
)

// racyKV is a one-node store whose first Put is applied and then answered
// ErrIndeterminate, as a follower answers when its forward to the leader
// broke after the leader applied the write (cluster/forward.go). Before
// that answer reaches the client, others use the store: after runs.
type racyKV struct {
	mu    sync.Mutex
	data  map[string][]byte
	puts  int
	after func(kv *racyKV)
}

func (s *racyKV) apply(key string, v []byte) {
	s.mu.Lock()
	s.data[key] = v
	s.mu.Unlock()
}

func (s *racyKV) Put(_ context.Context, key string, v []byte) error {
	s.apply(key, v)
	s.mu.Lock()
	s.puts++
	first := s.puts == 1
	s.mu.Unlock()
	if first {
		s.after(s)
		return fmt.Errorf("%w: forwarding to the leader: EOF", core.ErrIndeterminate)
	}
	return nil
}
func (s *racyKV) Delete(context.Context, string) error { return nil }
func (s *racyKV) Get(_ context.Context, key string, _ core.Consistency) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	if !ok {
		return nil, core.ErrNoSuchKey
	}
	return v, nil
}
func (s *racyKV) List(context.Context, string, string, int, core.Consistency) ([]string, string, error) {
	return nil, "", nil
}
func (s *racyKV) Limits() core.Limits { return core.DefaultLimits }

// A write whose outcome the store calls unknown (a follower's forward to
// the leader broke after the leader applied it) is not sent again, over
// either protocol: between its application and a retry, a reader may see
// it and another client's write may be acknowledged, which the retry
// would overwrite (a lost update). The caller gets ErrIndeterminate.
func TestIndeterminateWriteIsNotRetried(t *testing.T) {
	for _, protocol := range []client.Protocol{client.GRPC, client.REST} {
		t.Run(string(protocol), func(t *testing.T) {
			var readerSaw string
			kv := &racyKV{data: map[string][]byte{}}
			kv.after = func(s *racyKV) {
				v, _ := s.Get(context.Background(), "k", core.Linearizable)
				readerSaw = string(v)     // a reader sees A's write: A is before it
				s.apply("k", []byte("B")) // then B writes, and is acknowledged
			}
			var endpoint string
			if protocol == client.GRPC {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv, _ := grpcapi.NewServer(grpcapi.Config{KV: kv})
				go func() { _ = srv.Serve(ln) }()
				defer srv.Stop()
				endpoint = "http://" + ln.Addr().String()
			} else {
				srv := httptest.NewServer(rest.NewRouter(kv, nil, nil))
				defer srv.Close()
				endpoint = srv.URL
			}
			c, err := client.New(client.Config{Protocol: protocol, Endpoints: []string{endpoint}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Put(context.Background(), "k", []byte("A"))
			if !errors.Is(err, client.ErrIndeterminate) {
				t.Errorf("A's put: %v, want ErrIndeterminate", err)
			}
			final, _ := kv.Get(context.Background(), "k", core.Linearizable)
			if readerSaw != "A" || string(final) != "B" || kv.puts != 1 {
				t.Errorf("reader saw %q, the key holds %q after %d puts: B's acknowledged write must stay", readerSaw, final, kv.puts)
			}
		})
	}
}
