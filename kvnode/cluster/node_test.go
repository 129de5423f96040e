package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func openNode(t *testing.T, dir string, bootstrap bool) (*Node, *core.Service) {
	t.Helper()
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: dir, PeerBind: "127.0.0.1:0", Bootstrap: bootstrap, Fast: true, SnapshotThreshold: 100, TrailingLogs: 10, SnapshotInterval: 50 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	return n, core.NewService(st, n, core.DefaultLimits)
}

func waitLeader(t *testing.T, svc *core.Service) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "a leader", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := svc.Get(ctx, "probe", core.Linearizable)
		if errors.Is(err, core.ErrNoSuchKey) {
			return nil
		}
		return err
	})
}

func TestSingleNodeSurvivesRestartAndCompacts(t *testing.T) {
	dir := t.TempDir()
	n, svc := openNode(t, dir, true)
	waitLeader(t, svc)
	ctx := context.Background()
	for i := 0; i < 500; i++ {
		if err := svc.Put(ctx, fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Delete(ctx, "k000"); err != nil {
		t.Fatal(err)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 500; i < 520; i++ { // entries after the snapshot, replayed from the log
		if err := svc.Put(ctx, fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if first, _ := n.log.FirstIndex(); first < 400 {
		t.Fatalf("log first index %d after a snapshot at ~500: not compacted", first)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Restarting with --bootstrap again must not start a new cluster over the old state.
	_, svc = openNode(t, dir, true)
	waitLeader(t, svc)
	for i := 1; i < 520; i++ {
		v, err := svc.Get(ctx, fmt.Sprintf("k%03d", i), core.Linearizable)
		if err != nil || string(v) != fmt.Sprint(i) {
			t.Fatalf("k%03d = %q, %v after restart", i, v, err)
		}
	}
	if _, err := svc.Get(ctx, "k000", core.Linearizable); !errors.Is(err, core.ErrNoSuchKey) {
		t.Fatalf("deleted key came back: %v", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot on disk")
	}
}

func TestNodeWithoutBootstrapWaitsToBeAdded(t *testing.T) {
	_, svc := openNode(t, t.TempDir(), false)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err := svc.Put(ctx, "k", []byte("v"))
	if !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("write on an unbootstrapped node = %v, want ErrUnavailable", err)
	}
}

// A forwarded event is held to the API's limits on the leader: it goes
// into the log every replica stores.
func TestProposeLocalEnforcesTheLimits(t *testing.T) {
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: t.TempDir(), PeerBind: "127.0.0.1:0", Bootstrap: true, Fast: true, Limits: core.Limits{MaxKeyBytes: 5, MaxValueBytes: 8}}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	// waitLeader's probe key is five bytes.
	waitLeader(t, core.NewService(st, n, core.Limits{MaxKeyBytes: 5, MaxValueBytes: 8}))
	ctx := context.Background()
	for _, c := range []struct {
		e    core.Event
		want error
	}{
		{core.Event{Type: core.EventPut, Key: "kkkkk", Value: []byte("12345678")}, nil},
		{core.Event{Type: core.EventPut, Key: "kkkkkk", Value: []byte("v")}, core.ErrKeyTooLarge},
		{core.Event{Type: core.EventPut, Key: "k", Value: []byte("123456789")}, core.ErrValueTooLarge},
		{core.Event{Type: core.EventDelete, Key: "kkkkkk"}, core.ErrKeyTooLarge},
		{core.Event{Type: core.EventPut, Key: "", Value: []byte("v")}, core.ErrEmptyKey},
	} {
		cmd, err := c.e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ProposeLocal(ctx, cmd); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("ProposeLocal(%s %q, %d bytes) = %v, want %v", c.e.Type, c.e.Key, len(c.e.Value), err, c.want)
		}
	}
	if st.Len() != 1 {
		t.Fatalf("%d keys stored, want only the one within the limits", st.Len())
	}
}

// A node with Raft state but no leader (a quorum loss, or a restart of
// every member) has not applied its log yet; GET /v1/cluster must still
// name its cluster and say it has state, because that answer is what keeps
// the operator from bootstrapping a second cluster (and what it adopts).
func TestInfoNamesTheClusterWithoutALeader(t *testing.T) {
	dir := t.TempDir()
	n, svc := openNode(t, dir, true)
	waitLeader(t, svc)
	var id string
	testutil.Eventually(t, 10*time.Second, "a cluster ID", func() error {
		info, err := n.Info(context.Background())
		if err != nil || info.ClusterID == "" {
			return fmt.Errorf("info %+v, %v", info, err)
		}
		if !info.HasState {
			return fmt.Errorf("a running member says it has no state: %+v", info)
		}
		id = info.ClusterID
		return nil
	})
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Reopened under another ID, the node is not in its own configuration:
	// it never elects itself, so nothing commits and nothing is applied,
	// as on a member whose peers are all gone.
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-other", DataDir: dir, PeerBind: "127.0.0.1:0", Fast: true}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	time.Sleep(time.Second) // more than an election timeout
	info, err := n.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Leader != "" {
		t.Fatalf("the reopened node found a leader %q: the test no longer shows a node without one", info.Leader)
	}
	if info.ClusterID != id || !info.HasState {
		t.Fatalf("without a leader GET /v1/cluster says cluster %q, state %v; want %q and true", info.ClusterID, info.HasState, id)
	}
	if err := n.Bootstrap(); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("bootstrap on a node with state = %v", err)
	}

	// An empty node says so.
	empty, _ := openNode(t, t.TempDir(), false)
	info, err = empty.Info(context.Background())
	if err != nil || info.ClusterID != "" || info.HasState {
		t.Fatalf("empty node: %+v, %v", info, err)
	}
}

// The configuration records the advertised peer address as given: a name
// that resolves today is not replaced by the IP it resolves to, which a
// recreated pod no longer has.
func TestBootstrapRecordsTheAdvertisedName(t *testing.T) {
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: t.TempDir(), PeerBind: "127.0.0.1:0", PeerAdvertise: "localhost:7000", Bootstrap: true, Fast: true}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if got := string(f.Configuration().Servers[0].Address); got != "localhost:7000" {
		t.Fatalf("bootstrap recorded %q, want localhost:7000", got)
	}
}

// A node whose raft believes its log goes further than the log does is
// not live once that lasts: raft deletes a follower's conflicting suffix,
// and when the append after it is refused (a full volume) it keeps its
// old last index, and every later AppendEntries fails against entries
// that are gone. Only a restart, which reads the log again, gets it out.
// A moment of it (between the deletion and the append) is no failure.
func TestLiveFailsWhenRaftsLastIndexOutrunsTheLog(t *testing.T) {
	n, svc := openNode(t, t.TempDir(), true)
	waitLeader(t, svc)
	ctx := context.Background()
	for i := range 3 {
		if err := svc.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	n.staleLogAfter = time.Second
	last, err := n.log.LastIndex()
	if err != nil || n.raft.LastIndex() != last {
		t.Fatalf("log's last index %d (%v), raft's %d", last, err, n.raft.LastIndex())
	}
	// As raft's suffix deletion leaves it when the append after it fails.
	if err := n.log.DeleteRange(last, last); err != nil {
		t.Fatal(err)
	}
	if err := n.Live(); err != nil {
		t.Fatalf("live at once: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "not live", func() error {
		if n.Live() == nil {
			return errors.New("still live")
		}
		return nil
	})
	err = n.Live()
	if !strings.Contains(err.Error(), "last index") {
		t.Fatalf("Live() = %v", err)
	}
	t.Log(err)
}
