package core

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// dump restores a snapshot's stream into a new store and returns its keys
// and values, and the stream's keys in the order they were written.
func dump(t *testing.T, sn *Snapshot) (map[string]string, []string, *Store) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	order := streamKeys(t, buf.Bytes())
	st := NewStore()
	if err := st.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	keys, _ := st.List("", "", 1<<30)
	for _, k := range keys {
		v, _ := st.Get(k)
		m[k] = string(v)
	}
	return m, order, st
}

// streamKeys decodes the keys of a KVSNAP01 stream, in stream order.
func streamKeys(t *testing.T, b []byte) []string {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b[16:]))
	n, err := binary.ReadUvarint(r)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	read := func() []byte {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, l)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for i := uint64(0); i < n; i++ {
		keys = append(keys, string(read()))
		read()
	}
	return keys
}

// A snapshot is the state at the moment it was taken: writes after it,
// puts, deletes and metadata alike, do not show in its stream, however
// long after them it is written.
func TestSnapshotIsAPointInTimeView(t *testing.T) {
	st := NewStore()
	for i := 0; i < 1000; i++ {
		st.Apply(uint64(i+1), Event{Type: EventPut, Key: fmt.Sprintf("k%04d", i), Value: []byte("old")})
	}
	st.Apply(1001, Event{Type: EventMeta, Key: "cluster-id", Value: []byte("c1")})
	sn := st.Snapshot()
	if sn.Index != 1001 || sn.Len() != 1000 {
		t.Fatalf("snapshot at %d with %d keys", sn.Index, sn.Len())
	}
	index := uint64(1001)
	for i := 0; i < 1000; i++ {
		index++
		switch i % 3 {
		case 0:
			st.Apply(index, Event{Type: EventPut, Key: fmt.Sprintf("k%04d", i), Value: []byte("new")})
		case 1:
			st.Apply(index, Event{Type: EventDelete, Key: fmt.Sprintf("k%04d", i)})
		case 2:
			st.Apply(index, Event{Type: EventPut, Key: fmt.Sprintf("new%04d", i), Value: []byte("new")})
		}
	}
	index++
	st.Apply(index, Event{Type: EventMeta, Key: "cluster-id", Value: []byte("c2")})
	got, order, restored := dump(t, sn)
	if len(got) != 1000 {
		t.Fatalf("the snapshot streamed %d keys, want the 1000 of its time", len(got))
	}
	for k, v := range got {
		if v != "old" {
			t.Fatalf("%s = %q in the snapshot: a later write leaked into it", k, v)
		}
	}
	if restored.Meta("cluster-id") != "c1" || restored.AppliedIndex() != 1001 {
		t.Fatalf("restored meta %q at %d", restored.Meta("cluster-id"), restored.AppliedIndex())
	}
	if !slices.IsSorted(order) {
		t.Fatal("the snapshot's keys are not in byte order")
	}
	// The store itself moved on.
	if st.Len() != 1000-333+333 || st.Meta("cluster-id") != "c2" {
		t.Fatalf("store has %d keys, meta %q", st.Len(), st.Meta("cluster-id"))
	}
	if v, _ := st.Get("k0000"); string(v) != "new" {
		t.Fatalf("k0000 = %q", v)
	}
}

// Snapshots written by earlier versions carry the keys in map order, not
// sorted: they restore the same, and so do empty ones.
func TestRestoreUnorderedSnapshot(t *testing.T) {
	enc := func(index uint64, kv [][2]string, meta [][2]string) []byte {
		b := []byte(snapshotMagic)
		b = binary.BigEndian.AppendUint64(b, index)
		for _, set := range [][][2]string{kv, meta} {
			b = binary.AppendUvarint(b, uint64(len(set)))
			for _, p := range set {
				b = binary.AppendUvarint(b, uint64(len(p[0])))
				b = append(b, p[0]...)
				b = binary.AppendUvarint(b, uint64(len(p[1])))
				b = append(b, p[1]...)
			}
		}
		return b
	}
	old := enc(42, [][2]string{{"zeta", "1"}, {"alpha", "2"}, {"mid/x", ""}, {"mid", "3"}, {"\x00", "4"}}, [][2]string{{"cluster-id", "c9"}})
	st := NewStore()
	st.Apply(1, Event{Type: EventPut, Key: "gone", Value: []byte("x")})
	if err := st.Restore(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	keys, _ := st.List("", "", 100)
	if want := []string{"\x00", "alpha", "mid", "mid/x", "zeta"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	if v, _ := st.Get("alpha"); string(v) != "2" || st.Meta("cluster-id") != "c9" || st.AppliedIndex() != 42 || st.Len() != 5 {
		t.Fatalf("alpha %q, meta %q, applied %d, %d keys", v, st.Meta("cluster-id"), st.AppliedIndex(), st.Len())
	}
	// The store's own stream of the same state is the same format: the
	// same bytes but for the order, so old code restores it too.
	var buf bytes.Buffer
	if _, err := st.Snapshot().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sorted := enc(42, [][2]string{{"\x00", "4"}, {"alpha", "2"}, {"mid", "3"}, {"mid/x", ""}, {"zeta", "1"}}, [][2]string{{"cluster-id", "c9"}})
	if !bytes.Equal(buf.Bytes(), sorted) {
		t.Fatalf("stream\n%q\nwant\n%q", buf.Bytes(), sorted)
	}
	empty := NewStore()
	if err := empty.Restore(bytes.NewReader(enc(0, nil, nil))); err != nil || empty.Len() != 0 {
		t.Fatalf("empty snapshot: %v, %d keys", err, empty.Len())
	}
}

func TestListOrderedPrefix(t *testing.T) {
	st := NewStore()
	keys := []string{"user", "user/", "user/b", "user/a", "user/a/1", "user0", "usex", "usea", "a", "user/\xff", "user/c"}
	for i, k := range keys {
		st.Apply(uint64(i+1), Event{Type: EventPut, Key: k, Value: []byte("v")})
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          []string
		next          string
	}{
		{"user/", "", 100, []string{"user/", "user/a", "user/a/1", "user/b", "user/c", "user/\xff"}, ""},
		{"user/", "", 3, []string{"user/", "user/a", "user/a/1"}, "user/a/1"},
		{"user/", "user/a/1", 3, []string{"user/b", "user/c", "user/\xff"}, ""}, // exactly the rest: no next page
		{"user/", "user/a/0", 1, []string{"user/a/1"}, "user/a/1"},
		{"user/", "a", 2, []string{"user/", "user/a"}, "user/a"}, // after before the prefix
		{"user/", "zzz", 10, nil, ""},                            // after past the prefix
		{"user", "", 100, []string{"user", "user/", "user/a", "user/a/1", "user/b", "user/c", "user/\xff", "user0"}, ""},
		{"", "usea", 2, []string{"user", "user/"}, "user/"},
		{"nope", "", 10, nil, ""},
		{"user/", "", 0, nil, ""},
	} {
		got, next := st.List(tc.prefix, tc.after, tc.limit)
		if !slices.Equal(got, tc.want) || next != tc.next {
			t.Errorf("List(%q, %q, %d) = %q, %q; want %q, %q", tc.prefix, tc.after, tc.limit, got, next, tc.want, tc.next)
		}
	}
}

func TestApplyBatch(t *testing.T) {
	st := NewStore()
	st.ApplyBatch([]Indexed{
		{Index: 1, Event: Event{Type: EventPut, Key: "a", Value: []byte("1")}},
		{Index: 2}, // a no-op: only the index
		{Index: 3, Event: Event{Type: EventMeta, Key: "m", Value: []byte("x")}},
		{Index: 4, Event: Event{Type: EventPut, Key: "b", Value: []byte("2")}},
		{Index: 5, Event: Event{Type: EventDelete, Key: "a"}},
	})
	if _, err := st.Get("a"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("a: %v", err)
	}
	if v, _ := st.Get("b"); string(v) != "2" || st.Meta("m") != "x" || st.AppliedIndex() != 5 || st.Len() != 1 {
		t.Fatalf("b %q, meta %q, applied %d, %d keys", v, st.Meta("m"), st.AppliedIndex(), st.Len())
	}
	// Replayed indexes are skipped inside a batch too.
	st.ApplyBatch([]Indexed{
		{Index: 4, Event: Event{Type: EventPut, Key: "b", Value: []byte("old")}},
		{Index: 6, Event: Event{Type: EventMeta, Key: "m"}},
	})
	if v, _ := st.Get("b"); string(v) != "2" || st.Meta("m") != "" || st.AppliedIndex() != 6 {
		t.Fatalf("after replay: b %q, meta %q, applied %d", v, st.Meta("m"), st.AppliedIndex())
	}
}

// Readers, listings and snapshots run while batches are applied (run with
// -race). Each batch sets "a" and "b" to the same value, so any view, a
// snapshot's included, that shows them different saw half a batch.
func TestConcurrentViews(t *testing.T) {
	st := NewStore()
	const batches = 2000
	var wg sync.WaitGroup
	var stop atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop.Store(true)
		index := uint64(0)
		for i := 0; i < batches; i++ {
			v := []byte(fmt.Sprint(i))
			var b []Indexed
			for _, k := range []string{"a", fmt.Sprintf("k/%05d", i), "b"} {
				index++
				b = append(b, Indexed{Index: index, Event: Event{Type: EventPut, Key: k, Value: v}})
			}
			if i%7 == 0 {
				index++
				b = append(b, Indexed{Index: index, Event: Event{Type: EventDelete, Key: fmt.Sprintf("k/%05d", i/2)}})
			}
			st.ApplyBatch(b)
		}
	}()
	errs := make(chan error, 3)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for !stop.Load() {
				switch r {
				case 0:
					sn := st.Snapshot()
					var buf bytes.Buffer
					if _, err := sn.WriteTo(&buf); err != nil {
						errs <- err
						return
					}
					other := NewStore()
					if err := other.Restore(&buf); err != nil {
						errs <- err
						return
					}
					a, _ := other.Get("a")
					b, _ := other.Get("b")
					if !bytes.Equal(a, b) || other.Len() != sn.Len() {
						errs <- fmt.Errorf("snapshot at %d: a=%q b=%q, %d keys of %d", sn.Index, a, b, other.Len(), sn.Len())
						return
					}
				case 1:
					keys, _ := st.List("k/", "", 1000)
					if !slices.IsSorted(keys) {
						errs <- fmt.Errorf("unsorted listing")
						return
					}
				case 2:
					_, _ = st.Get("a")
					_ = st.Len()
					_ = st.AppliedIndex()
				}
			}
		}(r)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st.AppliedIndex() == 0 || st.Len() == 0 {
		t.Fatal("nothing applied")
	}
}
