package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// localReplicator applies events directly: the smallest real Replicator,
// so that Service's own rules can be tested without Raft.
type localReplicator struct {
	store *Store
	mu    sync.Mutex
	index uint64
}

func (r *localReplicator) Propose(_ context.Context, e Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	r.store.Apply(r.index, e)
	return nil
}

func (r *localReplicator) ReadBarrier(context.Context, Consistency) error { return nil }

func newService(t *testing.T) (*Service, *Store) {
	t.Helper()
	st := NewStore()
	return NewService(st, &localReplicator{store: st}, Limits{MaxKeyBytes: 8, MaxValueBytes: 16}), st
}

func TestPutGetDelete(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	if _, err := s.Get(ctx, "key-a", Linearizable); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("Get missing = %v, want ErrNoSuchKey", err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := s.Put(ctx, "key-a", []byte("v1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "key-a", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "key-a", Stale); err != nil || string(v) != "v2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	for i := 0; i < 2; i++ { // deleting twice, or a missing key, succeeds
		if err := s.Delete(ctx, "key-a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, "key-a", Linearizable); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("Get after delete = %v", err)
	}
}

func TestLimits(t *testing.T) {
	ctx := context.Background()
	s, st := newService(t)
	for _, tc := range []struct {
		key   string
		value []byte
		want  error
	}{
		{"", nil, ErrEmptyKey},
		{"123456789", nil, ErrKeyTooLarge},
		{"k", bytes.Repeat([]byte("x"), 17), ErrValueTooLarge},
	} {
		if err := s.Put(ctx, tc.key, tc.value); !errors.Is(err, tc.want) {
			t.Errorf("Put(%q, %d bytes) = %v, want %v", tc.key, len(tc.value), err, tc.want)
		}
	}
	if st.Len() != 0 || st.AppliedIndex() != 0 {
		t.Fatal("a rejected write reached the store")
	}
	if err := s.Put(ctx, "12345678", bytes.Repeat([]byte("x"), 16)); err != nil {
		t.Fatalf("write at the limits rejected: %v", err)
	}
}

func TestArbitraryBytes(t *testing.T) {
	ctx := context.Background()
	st := NewStore()
	s := NewService(st, &localReplicator{store: st}, DefaultLimits)
	key := "a/b\n\tc \x00\xff"
	val := []byte("line1\nline2\t\x00\xfe")
	if err := s.Put(ctx, key, val); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get(ctx, key, Stale); !bytes.Equal(v, val) {
		t.Fatalf("got %q", v)
	}
}

func TestEventRoundTrip(t *testing.T) {
	for _, e := range []Event{
		{Type: EventPut, Key: "k", Value: []byte("v")},
		{Type: EventPut, Key: "k\x00\n", Value: nil},
		{Type: EventDelete, Key: strings.Repeat("x", 300)},
	} {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalEvent(b)
		if err != nil || got.Type != e.Type || got.Key != e.Key || !bytes.Equal(got.Value, e.Value) {
			t.Fatalf("round trip of %+v = %+v, %v", e, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {9, 0}, {byte(EventPut), 5, 'a'}, {byte(EventDelete), 1, 'a', 'b'}} {
		if _, err := UnmarshalEvent(bad); !errors.Is(err, ErrCorruptEvent) {
			t.Errorf("UnmarshalEvent(%v) = %v", bad, err)
		}
	}
}

func FuzzUnmarshalEvent(f *testing.F) {
	f.Add([]byte{byte(EventPut), 1, 'k', 'v'})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEvent(b)
		if err != nil {
			return
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if e2, err := UnmarshalEvent(again); err != nil || e2.Key != e.Key || !bytes.Equal(e2.Value, e.Value) {
			t.Fatalf("re-decode differs")
		}
	})
}

func TestListPages(t *testing.T) {
	st := NewStore()
	for i := 0; i < 25; i++ {
		st.Apply(uint64(i+1), Event{Type: EventPut, Key: fmt.Sprintf("user/%02d", i), Value: []byte("x")})
	}
	st.Apply(26, Event{Type: EventPut, Key: "other", Value: []byte("x")})
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		keys, next := st.List("user/", after, 10)
		all = append(all, keys...)
		if next == "" {
			break
		}
		after = next
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(all) != 25 || all[0] != "user/00" || all[24] != "user/24" {
		t.Fatalf("listed %v", all)
	}
}

func TestSnapshotRestore(t *testing.T) {
	st := NewStore()
	st.Apply(1, Event{Type: EventPut, Key: "a", Value: []byte("1")})
	st.Apply(2, Event{Type: EventPut, Key: "b\x00", Value: []byte{}})
	st.Apply(3, Event{Type: EventMeta, Key: "cluster-id", Value: []byte("c1")})
	var buf bytes.Buffer
	if _, err := st.Snapshot().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	st.Apply(4, Event{Type: EventDelete, Key: "a"}) // after the snapshot: must not survive restore
	other := NewStore()
	if err := other.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if v, err := other.Get("a"); err != nil || string(v) != "1" {
		t.Fatalf("a = %q, %v", v, err)
	}
	if _, err := other.Get("b\x00"); err != nil {
		t.Fatal(err)
	}
	if other.Meta("cluster-id") != "c1" || other.Len() != 2 {
		t.Fatalf("meta %q, %d keys", other.Meta("cluster-id"), other.Len())
	}
	if other.AppliedIndex() != 3 {
		t.Fatalf("applied = %d", other.AppliedIndex())
	}
	if err := other.Restore(bytes.NewReader(buf.Bytes()[:buf.Len()-1])); err == nil {
		t.Fatal("truncated snapshot restored")
	}
}

func TestApplyIgnoresReplayedIndexes(t *testing.T) {
	st := NewStore()
	st.Apply(5, Event{Type: EventPut, Key: "a", Value: []byte("new")})
	st.Apply(4, Event{Type: EventPut, Key: "a", Value: []byte("old")})
	if v, _ := st.Get("a"); string(v) != "new" {
		t.Fatalf("an older index overwrote a newer one: %q", v)
	}
}

func TestWaitApplied(t *testing.T) {
	st := NewStore()
	done := make(chan error, 1)
	go func() { done <- st.WaitApplied(context.Background(), 3) }()
	st.Apply(1, Event{Type: EventPut, Key: "a", Value: nil})
	st.MarkApplied(2)
	select {
	case err := <-done:
		t.Fatalf("returned before index 3 was applied (%v)", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.MarkApplied(3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := st.WaitApplied(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied past the end = %v", err)
	}
}

// A reader whose request ended must not stay queued: on a follower that
// never applies the index (cut off from the leader), every timed-out read
// would otherwise leave its waiter behind for good.
func TestWaitAppliedDequeuesOnContextEnd(t *testing.T) {
	st := NewStore()
	for i := 0; i < 100; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if err := st.WaitApplied(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitApplied = %v", err)
		}
		cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.WaitApplied(ctx, 10) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitApplied = %v", err)
	}
	st.wmu.Lock()
	n := len(st.waiters)
	st.wmu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters still queued after their contexts ended", n)
	}
	// The queue still works for the waiters that stay.
	go func() { done <- st.WaitApplied(context.Background(), 3) }()
	st.MarkApplied(3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// MaxEventBytes bounds the body that carries a forwarded event: the largest
// event within the limits must fit, with any key length's varint.
func TestMaxEventBytesHoldsTheLargestEvent(t *testing.T) {
	for _, l := range []Limits{{MaxKeyBytes: 1, MaxValueBytes: 0}, {MaxKeyBytes: 200, MaxValueBytes: 5}, DefaultLimits, {MaxKeyBytes: 1 << 21, MaxValueBytes: 1}} {
		b, err := Event{Type: EventPut, Key: strings.Repeat("k", l.MaxKeyBytes), Value: make([]byte, l.MaxValueBytes)}.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > l.MaxEventBytes() {
			t.Errorf("%+v: largest event is %d bytes, MaxEventBytes %d", l, len(b), l.MaxEventBytes())
		}
		e, err := UnmarshalEvent(b)
		if err != nil || l.CheckEvent(e) != nil {
			t.Errorf("%+v: largest event refused: %v %v", l, err, l.CheckEvent(e))
		}
	}
}

// SnapshotBytes is what the disk budget reserves for the next snapshot:
// it must not fall short of what WriteTo writes, through overwrites,
// deletes, metadata and a restore.
func TestSnapshotBytesFollowsTheData(t *testing.T) {
	s := NewStore()
	check := func(st *Store, what string) {
		t.Helper()
		var b bytes.Buffer
		n, err := st.Snapshot().WriteTo(&b)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.SnapshotBytes(); got < n || got > n+32 {
			t.Fatalf("%s: SnapshotBytes %d, a snapshot is %d bytes", what, got, n)
		}
	}
	check(s, "empty")
	var i uint64
	apply := func(e Event) { i++; s.Apply(i, e) }
	for k := 0; k < 300; k++ {
		apply(Event{Type: EventPut, Key: fmt.Sprintf("k%d", k), Value: bytes.Repeat([]byte("v"), k)})
	}
	check(s, "puts")
	for k := 0; k < 300; k += 3 {
		apply(Event{Type: EventPut, Key: fmt.Sprintf("k%d", k), Value: []byte("short")})
		apply(Event{Type: EventDelete, Key: fmt.Sprintf("k%d", k+1)})
		apply(Event{Type: EventDelete, Key: "missing"})
	}
	apply(Event{Type: EventMeta, Key: "cluster-id", Value: []byte("abc")})
	check(s, "overwrites, deletes and metadata")
	var b bytes.Buffer
	if _, err := s.Snapshot().WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	r := NewStore()
	if err := r.Restore(&b); err != nil {
		t.Fatal(err)
	}
	check(r, "restored")
}
