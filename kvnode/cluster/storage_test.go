package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/test/tmpfs"
)

func TestFitSegment(t *testing.T) {
	for _, tc := range []struct {
		capacity uint64
		want     int64
	}{
		{16 << 20, 1 << 20},  // the least
		{96 << 20, 3 << 20},  // a 32nd
		{150e6, 4653056},     // the volume: a 32nd, in 64 KiB steps
		{10 << 30, 64 << 20}, // the most
	} {
		if got := fitSegment(tc.capacity); got != tc.want {
			t.Errorf("fitSegment(%d) = %d, want %d", tc.capacity, got, tc.want)
		}
	}
}

// On a volume that something else filled, the node refuses PUTs, its own
// and those a follower forwards (507, which the follower turns back into
// core.ErrNoSpace), before they enter the log; DELETEs go on; the status
// says so; and once the space is back, PUTs are taken again with no
// restart.
func TestFullVolumeRefusesPutsAndKeepsDeletes(t *testing.T) {
	vol := tmpfs.Mount(t, 48<<20)
	n, svc := openNode(t, filepath.Join(vol, "data"), true)
	waitLeader(t, svc)
	ctx := context.Background()
	if err := svc.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// Leave free what a DELETE may use, and a PUT may not.
	s := n.storage
	s.mu.Lock()
	sp := s.measure()
	s.mu.Unlock()
	keep := s.segment + 5*sp.floor/8 - n.log.Unused()
	filler, err := os.Create(filepath.Join(vol, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Fallocate(int(filler.Fd()), 0, 0, int64(sp.free)-keep)
	_ = filler.Close() // allocated, and removed below
	if err != nil {
		t.Fatal(err)
	}

	if err := svc.Put(ctx, "b", []byte("2")); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("PUT on a full volume: %v, want ErrNoSpace", err)
	}
	if err := svc.Delete(ctx, "a"); err != nil {
		t.Fatalf("DELETE on a full volume: %v", err)
	}
	if _, err := svc.Get(ctx, "b", core.Linearizable); !errors.Is(err, core.ErrNoSuchKey) {
		t.Fatalf("the refused PUT was applied: %v", err)
	}
	if st := n.Status().Storage; st == nil || !st.Full || st.ReserveBytes == 0 {
		t.Fatalf("status on a full volume: %+v", st)
	}
	if err := n.Live(); err != nil {
		t.Fatalf("a full volume made the node not live: %v", err)
	}

	allow := func(*http.Request) error { return nil }
	srv := httptest.NewServer(Handler(n, Authorizers{Admin: allow, Peer: allow}))
	defer srv.Close()
	cmd, _ := core.Event{Type: core.EventPut, Key: "c", Value: []byte("3")}.MarshalBinary()
	follower := &Node{client: srv.Client(), cfg: Config{NodeID: "follower"}}
	if err := follower.forwardPropose(ctx, srv.URL, cmd); !errors.Is(err, core.ErrNoSpace) {
		t.Fatalf("a PUT forwarded to a full leader: %v, want ErrNoSpace", err)
	}

	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := svc.Put(ctx, "b", []byte("2"))
		if err == nil {
			break
		}
		if !errors.Is(err, core.ErrNoSpace) || time.Now().After(deadline) {
			t.Fatalf("PUT once the space is back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := follower.forwardPropose(ctx, srv.URL, cmd); err != nil {
		t.Fatalf("a forwarded PUT once the space is back: %v", err)
	}
	if st := n.Status().Storage; st == nil || st.Full {
		t.Fatalf("status once the space is back: %+v", st)
	}
}
