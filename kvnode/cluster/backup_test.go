package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// A backup taken by a leader right after it restarted (its store has
// applied only its last snapshot so far) still holds every acknowledged
// write: the strict barrier comes first.
func TestBackupRightAfterARestartHoldsEveryWrite(t *testing.T) {
	dir := t.TempDir()
	n, svc := openNode(t, dir, true)
	waitLeader(t, svc)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if err := svc.Put(ctx, fmt.Sprint("a", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := svc.Put(ctx, fmt.Sprint("b", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	acked := n.raft.LastIndex()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	n, _ = openNode(t, dir, false)
	deadline := time.Now().Add(10 * time.Second)
	for n.raft.State() != raft.Leader && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	hdr, rc, err := n.OpenBackup(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if hdr.Index < acked || hdr.Keys != 60 {
		t.Fatalf("backup at index %d with %d keys; the last acknowledged write is at index %d, 60 keys", hdr.Index, hdr.Keys, acked)
	}
}

// A restore cut short after it recorded the backup and the term but
// before its snapshot was complete is done again at the next start, not
// taken for done: the node starts with the backup's data.
func TestRestoreCutShortIsDoneAgain(t *testing.T) {
	n0, svc0 := openNode(t, t.TempDir(), true)
	waitLeader(t, svc0)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := svc0.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "b.kvb")
	hdr, rc, err := n0.OpenBackup(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	bw, err := backup.NewWriter(f, hdr)
	if err == nil {
		_, err = io.Copy(bw, rc)
	}
	if err == nil {
		err = bw.Close()
	}
	_ = rc.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	st := core.NewStore()
	n, err := Open(Config{NodeID: "node-0", DataDir: dir, PeerBind: "127.0.0.1:0", Fast: true, RestoreFrom: file}, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// The crash: everything but the snapshot (and what raft wrote after it).
	for _, sub := range []string{"snapshots", "log"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	lg, err := txlog.Open(filepath.Join(dir, "log"), txlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.SetUint64([]byte(keyCurrentTerm), hdr.Term); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}

	st = core.NewStore()
	n, err = Open(Config{NodeID: "node-0", DataDir: dir, PeerBind: "127.0.0.1:0", Fast: true, RestoreFrom: file}, st)
	if err != nil {
		t.Fatalf("the start after a restore cut short: %v", err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	svc := core.NewService(st, n, core.DefaultLimits)
	waitLeader(t, svc)
	if st.Len() != 20 {
		t.Fatalf("%d keys after the restore was done again, want 20", st.Len())
	}
}
