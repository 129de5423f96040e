package pglog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog"
	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog/pgtest"
)

var srv *pgtest.Server

// One server for the package; each test has a database of its own.
func TestMain(m *testing.M) {
	var err error
	if srv, err = pgtest.New(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

func server(*testing.T) *pgtest.Server { return srv }

type node struct {
	log   *pglog.Log
	store *core.Store
	svc   *core.Service
}

func open(t *testing.T, cfg pglog.Config, store *core.Store) *node {
	t.Helper()
	if store == nil {
		store = core.NewStore()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := pglog.Open(ctx, cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	waitReady(t, l)
	return &node{log: l, store: store, svc: core.NewService(store, l, core.Limits{})}
}

func waitReady(t *testing.T, l *pglog.Log) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", l.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestWritesOnOneNodeAreReadOnAnother(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	a, b := open(t, cfg, nil), open(t, cfg, nil)
	// Keys and values of any bytes: TEXT columns would refuse NUL and
	// invalid UTF-8.
	key, value := "k\x00\xff/ é", []byte{0, 0xff, '\n'}
	if err := a.svc.Put(ctx(t), key, value); err != nil {
		t.Fatal(err)
	}
	got, err := b.svc.Get(ctx(t), key, core.Linearizable)
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("linearizable read on the other node: %q, %v", got, err)
	}
	// The writer applied its own write before it was acknowledged.
	if got, err := a.svc.Get(ctx(t), key, core.Stale); err != nil || !bytes.Equal(got, value) {
		t.Fatalf("stale read on the writer: %q, %v", got, err)
	}
	if err := b.svc.Put(ctx(t), "empty", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := a.svc.Get(ctx(t), "empty", core.Strict); err != nil || len(got) != 0 {
		t.Fatalf("empty value: %q, %v", got, err)
	}
	if err := b.svc.Delete(ctx(t), key); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Get(ctx(t), key, core.Linearizable); !errors.Is(err, core.ErrNoSuchKey) {
		t.Fatalf("after delete: %v", err)
	}
	// A third node starts from kv_state and has the same keys.
	c := open(t, cfg, nil)
	keys, _, err := c.svc.List(ctx(t), "", "", 100, core.Stale)
	if err != nil || len(keys) != 1 || keys[0] != "empty" {
		t.Fatalf("a new node's keys: %q, %v", keys, err)
	}
}

// TestSequenceIsCommitOrder writes unique keys from many goroutines on
// three nodes at once. If a node ever applied a sequence before a lower
// one had committed (a BIGSERIAL's order), it would skip the lower one for
// good, and miss its key.
func TestSequenceIsCommitOrder(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	nodes := []*node{open(t, cfg, nil), open(t, cfg, nil), open(t, cfg, nil)}
	const writers, each = 8, 60
	var wg sync.WaitGroup
	errs := make(chan error, writers*len(nodes))
	for i, n := range nodes {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					if err := n.svc.Put(ctx(t), fmt.Sprintf("n%d/w%d/%03d", i, w, j), []byte("v")); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := len(nodes) * writers * each
	for i, n := range nodes {
		if err := n.log.ReadBarrier(ctx(t), core.Linearizable); err != nil {
			t.Fatal(err)
		}
		if got := n.store.Len(); got != want {
			t.Errorf("node %d has %d keys, want %d", i, got, want)
		}
		if got := n.store.AppliedIndex(); got != uint64(want) {
			t.Errorf("node %d applied sequence %d, want %d (gapless)", i, got, want)
		}
	}
}

func TestALaggingNodeLoadsTheStateAfterAPrune(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	cfg.Retain = 10
	a := open(t, cfg, nil)
	for i := range 100 {
		if err := a.svc.Put(ctx(t), fmt.Sprintf("k%03d", i%40), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.svc.Put(ctx(t), "gone", nil), a.svc.Delete(ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	n, err := a.log.PruneNow()
	if err != nil || n != 92 {
		t.Fatalf("pruned %d rows (%v), want the 92 more than 10 behind the head", n, err)
	}
	// A node that applied 50 events (as if it had been partitioned) finds
	// the log starting at 93 and loads the state.
	behind := core.NewStore()
	for i := range 50 {
		behind.Apply(uint64(i+1), core.Event{Type: core.EventPut, Key: fmt.Sprintf("k%03d", i%40), Value: []byte("old")})
	}
	behind.Apply(50, core.Event{Type: core.EventPut, Key: "stale-only", Value: []byte("x")})
	b := open(t, cfg, behind)
	if err := b.log.ReadBarrier(ctx(t), core.Linearizable); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		want, _ := a.svc.Get(ctx(t), fmt.Sprintf("k%03d", i), core.Stale)
		got, err := b.svc.Get(ctx(t), fmt.Sprintf("k%03d", i), core.Stale)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("k%03d: %q, %v; want %q", i, got, err, want)
		}
	}
	if b.store.Len() != 40 {
		t.Fatalf("%d keys after loading the state, want 40 (nothing of the old copy left)", b.store.Len())
	}
}

func TestTheDatabaseIsClaimedAndVersioned(t *testing.T) {
	s := server(t)
	db := s.NewDatabase(t)
	cfg := s.Config(db)
	cfg.Store = "default/one"
	// Nodes starting at once all get the schema, once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); open(t, cfg, nil) }()
	}
	wg.Wait()
	other := cfg
	other.Store = "default/two"
	if _, err := pglog.Open(ctx(t), other, core.NewStore()); !errors.Is(err, pglog.ErrForeignDatabase) || !strings.Contains(err.Error(), `"default/one"`) {
		t.Fatalf("a second store on the database: %v", err)
	}
	s.Exec(t, db, `UPDATE kv_schema_version SET version = $1`, pglog.SchemaVersion+1)
	if _, err := pglog.Open(ctx(t), cfg, core.NewStore()); !errors.Is(err, pglog.ErrForeignDatabase) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a newer schema: %v", err)
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	cfg.Password = "wrong password sEcReT"
	_, err := pglog.Open(ctx(t), cfg, core.NewStore())
	if err == nil || strings.Contains(err.Error(), "sEcReT") {
		t.Fatalf("a wrong password: %v", err)
	}
	bad := s.Config("x")
	bad.SSLMode = "sometimes"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "sslmode") {
		t.Fatalf("a bad sslmode: %v", err)
	}
	bad.SSLMode = pglog.SSLVerifyFull
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Fatalf("verify-full without a CA: %v", err)
	}
}

// TestPostgresRestart stops PostgreSQL as a crash would, under writes:
// readiness turns false, writes fail without hanging, and once it is back
// every acknowledged write is there.
func TestPostgresRestart(t *testing.T) {
	s := pgtest.Start(t) // a server of its own: this test stops it
	cfg := s.Config(s.NewDatabase(t))
	cfg.QueryTimeout = time.Second
	a, b := open(t, cfg, nil), open(t, cfg, nil)
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d/%d", w, i)
				c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := a.svc.Put(c, k, []byte("v"))
				cancel()
				if err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				} else if !errors.Is(err, core.ErrUnavailable) && !errors.Is(err, core.ErrIndeterminate) && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("write %s: %v", k, err)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	s.Stop(t)
	deadline := time.Now().Add(20 * time.Second)
	for a.log.Ready() == nil || b.log.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatal("still ready with postgres down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("unready with postgres down: %v", b.log.Ready())
	time.Sleep(time.Second)
	s.Start(t)
	waitReady(t, a.log)
	waitReady(t, b.log)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	if err := b.log.ReadBarrier(ctx(t), core.Linearizable); err != nil {
		t.Fatal(err)
	}
	for k := range acked {
		if _, err := b.store.Get(k); err != nil {
			t.Fatalf("acknowledged write %s lost: %v", k, err)
		}
	}
	t.Logf("%d writes acknowledged, all there", len(acked))
}

// TestCloseDrainsTheQueue closes a node with writes queued: each is
// answered, and each acknowledged one is in the log.
func TestCloseDrainsTheQueue(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	a := open(t, cfg, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked []string
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("k%d", i)
			if a.svc.Put(ctx(t), k, []byte("v")) == nil {
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := a.log.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	b := open(t, cfg, nil)
	for _, k := range acked {
		if _, err := b.store.Get(k); err != nil {
			t.Fatalf("acknowledged %s lost at close", k)
		}
	}
	if err := a.svc.Put(ctx(t), "late", nil); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("a write after Close: %v", err)
	}
	t.Logf("%d of 200 acknowledged before and during Close", len(acked))
}

// TestCloseWithAFullQueue closes a node whose writes are stuck behind a
// lock on the head row, with more writes than the queue holds and no
// deadline on them: Close returns within its own deadline, and every
// writer is answered.
func TestCloseWithAFullQueue(t *testing.T) {
	s := server(t)
	db := s.NewDatabase(t)
	cfg := s.Config(db)
	cfg.QueryTimeout = 500 * time.Millisecond
	a := open(t, cfg, nil)
	holder := s.Connect(t, db)
	defer func() { _ = holder.Close(context.Background()) }()
	tx, err := holder.Begin(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx(t), `SELECT FROM kv_head FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 5000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.svc.Put(context.Background(), fmt.Sprintf("k%d", i), []byte("v"))
		}()
	}
	time.Sleep(time.Second)
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_ = a.log.Close(c)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v with a 2 s deadline", d)
	}
	answered := make(chan struct{})
	go func() { wg.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("writers still waiting 10 s after Close")
	}
	_ = tx.Rollback(ctx(t))
	if err := a.log.ReadBarrier(ctx(t), core.Linearizable); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("a read after Close: %v", err)
	}
}

// TestAHeadlessLogIsRefused deletes kv_head's row behind the log's back:
// a write changes nothing and says it was not applied, the node stops
// being live, and a node starting on the database refuses it.
func TestAHeadlessLogIsRefused(t *testing.T) {
	s := server(t)
	db := s.NewDatabase(t)
	cfg := s.Config(db)
	a := open(t, cfg, nil)
	if err := a.svc.Put(ctx(t), "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s.Exec(t, db, `DELETE FROM kv_head`)
	if err := a.svc.Put(ctx(t), "after", []byte("v")); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("a write without a head: %v", err)
	}
	if a.log.Live() == nil {
		t.Fatal("still live without a head row")
	}
	if _, err := pglog.Open(ctx(t), cfg, core.NewStore()); !errors.Is(err, pglog.ErrForeignDatabase) {
		t.Fatalf("opening a headless log: %v", err)
	}
	conn := s.Connect(t, db)
	defer func() { _ = conn.Close(context.Background()) }()
	var n int
	if err := conn.QueryRow(ctx(t), `SELECT count(*) FROM kv_state WHERE key = 'after'::bytea`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused write reached kv_state: %d, %v", n, err)
	}
}

func TestAsynchronousCommitIsRefused(t *testing.T) {
	s := server(t)
	db := s.NewDatabase(t)
	s.Exec(t, db, `ALTER DATABASE `+db+` SET synchronous_commit = off`)
	if _, err := pglog.Open(ctx(t), s.Config(db), core.NewStore()); !errors.Is(err, pglog.ErrForeignDatabase) || !strings.Contains(err.Error(), "synchronous_commit") {
		t.Fatalf("synchronous_commit off: %v", err)
	}
}

// TestTheStateTableFollowsTheLog puts and deletes the same keys from two
// nodes at once, then starts a third from kv_state: it must hold what the
// nodes that applied the log hold. A write statement whose snapshot is
// older than its wait for the head row's lock would miss a key the
// writer just ahead of it inserted, and leave in kv_state a key the log
// deleted.
func TestTheStateTableFollowsTheLog(t *testing.T) {
	s := server(t)
	cfg := s.Config(s.NewDatabase(t))
	a, b := open(t, cfg, nil), open(t, cfg, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := a
			if w%2 == 1 {
				n = b
			}
			for i := range 150 {
				k := fmt.Sprintf("k%d", i%5)
				var err error
				if (i+w)%2 == 0 {
					err = n.svc.Put(ctx(t), k, fmt.Appendf(nil, "%d-%d", w, i))
				} else {
					err = n.svc.Delete(ctx(t), k)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := a.log.ReadBarrier(ctx(t), core.Linearizable); err != nil {
		t.Fatal(err)
	}
	c := open(t, cfg, nil)
	if err := c.log.ReadBarrier(ctx(t), core.Linearizable); err != nil {
		t.Fatal(err)
	}
	if a.store.AppliedIndex() != c.store.AppliedIndex() {
		t.Fatalf("applied %d and %d", a.store.AppliedIndex(), c.store.AppliedIndex())
	}
	for i := range 5 {
		k := fmt.Sprintf("k%d", i)
		va, ea := a.store.Get(k)
		vc, ec := c.store.Get(k)
		if !bytes.Equal(va, vc) || (ea == nil) != (ec == nil) {
			t.Errorf("%s: the log says %q (%v), kv_state says %q (%v)", k, va, ea, vc, ec)
		}
	}
}
