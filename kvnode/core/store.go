package core

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	iradix "github.com/hashicorp/go-immutable-radix/v2"
)

// Store is the in-memory state: an immutable radix tree from key to value
// plus the cluster metadata and the index of the last applied event. Only
// the replicated state machine calls Apply, ApplyBatch and Restore; everyone
// else reads.
//
// The tree is hashicorp/go-immutable-radix, the structure Consul's state
// store is built on (and of the same family as hashicorp/raft): a write
// copies only the path from the root to the changed leaf and shares the
// rest, so every published root is a consistent point-in-time view that
// stays valid for as long as someone holds it. A snapshot is the current
// root, taken in O(1); it streams, in key order, while writes go on.
// Listing a prefix is a seek and an ordered walk, O(log n + k).
//
// Writers (one at a time: the state machine) build the next root and
// publish it with an atomic store; readers load the root without a lock.
// Values are never mutated after they are stored, so readers and snapshots
// may hold on to them without copying.
type Store struct {
	// mu serializes writers. Readers never take it.
	mu   sync.Mutex
	view atomic.Pointer[view]

	wmu     sync.Mutex
	waiters []waiter
}

// view is one published state. Nothing in it changes once published: the
// tree is immutable and meta is copied before a write changes it.
type view struct {
	tree    *iradix.Tree[[]byte]
	meta    map[string]string
	applied uint64
	// pairs is the encoded size of the tree's keys and values in a
	// snapshot (see pairBytes).
	pairs int64
}

type waiter struct {
	index uint64
	ch    chan struct{}
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{}
	s.view.Store(&view{tree: iradix.New[[]byte](), meta: map[string]string{}})
	return s
}

// Meta returns a cluster metadata value ("" when unset).
func (s *Store) Meta(key string) string { return s.view.Load().meta[key] }

// Get returns the value of key, or ErrNoSuchKey.
func (s *Store) Get(key string) ([]byte, error) {
	v, ok := s.view.Load().tree.Get([]byte(key))
	if !ok {
		return nil, ErrNoSuchKey
	}
	return v, nil
}

// Len is the number of keys.
func (s *Store) Len() int { return s.view.Load().tree.Len() }

// SnapshotBytes is the size of a snapshot (WriteTo) of the store as it is
// now, kept up to date by every write: what the disk must have room for
// to take one.
func (s *Store) SnapshotBytes() int64 {
	v := s.view.Load()
	n := int64(16+binary.MaxVarintLen64*2) + v.pairs
	for k, m := range v.meta {
		n += pairBytes(k, []byte(m))
	}
	return n
}

// pairBytes is the encoded size of one key and its value in a snapshot.
func pairBytes(key string, value []byte) int64 {
	return int64(uvarintLen(len(key)) + len(key) + uvarintLen(len(value)) + len(value))
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return len(binary.AppendUvarint(b[:0], uint64(n)))
}

// AppliedIndex is the log index of the last event applied.
func (s *Store) AppliedIndex() uint64 { return s.view.Load().applied }

// Indexed is an event and the log index it was committed at.
type Indexed struct {
	Index uint64
	Event Event
}

// Apply applies e, committed at log index, and wakes readers waiting for
// that index. Indexes must not go backwards; an index that does not advance
// is ignored so that a replay cannot apply an event twice.
func (s *Store) Apply(index uint64, e Event) {
	s.ApplyBatch([]Indexed{{Index: index, Event: e}})
}

// ApplyBatch applies events committed together, in order, as Apply would
// one by one, and publishes one new view for all of them: one transaction
// on the tree, so a path that several events touch is copied once.
// Readers see the state before the batch or after it, never a part. An
// event whose Type is zero changes nothing and only advances the applied
// index, as MarkApplied does (Raft's no-ops and configuration entries).
func (s *Store) ApplyBatch(events []Indexed) {
	if len(events) == 0 {
		return
	}
	s.mu.Lock()
	cur := s.view.Load()
	next := &view{tree: cur.tree, meta: cur.meta, applied: cur.applied, pairs: cur.pairs}
	var txn *iradix.Txn[[]byte]
	metaCopied := false
	for _, ie := range events {
		index, e := ie.Index, ie.Event
		if index != 0 && index <= next.applied {
			continue
		}
		switch e.Type {
		case EventPut, EventDelete:
			if txn == nil {
				txn = cur.tree.Txn()
			}
			if e.Type == EventPut {
				old, replaced := txn.Insert([]byte(e.Key), e.Value)
				if replaced {
					next.pairs -= pairBytes(e.Key, old)
				}
				next.pairs += pairBytes(e.Key, e.Value)
			} else if old, deleted := txn.Delete([]byte(e.Key)); deleted {
				next.pairs -= pairBytes(e.Key, old)
			}
		case EventMeta:
			if !metaCopied {
				next.meta = maps.Clone(cur.meta)
				metaCopied = true
			}
			if len(e.Value) == 0 {
				delete(next.meta, e.Key)
			} else {
				next.meta[e.Key] = string(e.Value)
			}
		}
		if index > next.applied {
			next.applied = index
		}
	}
	if txn != nil {
		// CommitOnly: nobody watches the tree's mutation channels.
		next.tree = txn.CommitOnly()
	}
	s.view.Store(next)
	s.mu.Unlock()
	s.wake(next.applied)
}

// MarkApplied advances the applied index for log entries that carry no
// event (Raft's no-ops and configuration changes), so that WaitApplied does
// not wait for an event that will never come.
func (s *Store) MarkApplied(index uint64) {
	s.mu.Lock()
	cur := s.view.Load()
	if index > cur.applied {
		s.view.Store(&view{tree: cur.tree, meta: cur.meta, applied: index, pairs: cur.pairs})
	}
	s.mu.Unlock()
	s.wake(index)
}

func (s *Store) wake(index uint64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.waiters) == 0 {
		return
	}
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if w.index <= index {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(s.waiters[len(kept):])
	s.waiters = kept
}

// WaitApplied returns once the store has applied index, or when ctx ends.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	if s.AppliedIndex() >= index {
		return nil
	}
	ch := make(chan struct{})
	s.wmu.Lock()
	s.waiters = append(s.waiters, waiter{index: index, ch: ch})
	s.wmu.Unlock()
	// Apply may have run between the check and the registration.
	if s.AppliedIndex() >= index {
		s.wake(s.AppliedIndex())
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		// Leave the queue: on a follower cut off from its leader the index
		// may never be applied, and every timed-out read would otherwise
		// stay queued (and its channel allocated) for good.
		s.dequeue(ch)
		return ctx.Err()
	}
}

// dequeue removes the waiter whose channel is ch, if wake has not already.
func (s *Store) dequeue(ch chan struct{}) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for i, w := range s.waiters {
		if w.ch == ch {
			last := len(s.waiters) - 1
			s.waiters[i] = s.waiters[last] // wake does not depend on the order
			s.waiters[last] = waiter{}
			s.waiters = s.waiters[:last]
			return
		}
	}
}

// List returns up to limit keys that start with prefix and sort after
// `after`, in byte order, and the key to pass as `after` for the next page
// ("" when there is none). It walks the tree from the first key at or after
// max(prefix, after) and stops after limit+1 keys or at the end of the
// prefix: O(log n + limit), on a view no write waits for.
func (s *Store) List(prefix, after string, limit int) (keys []string, next string) {
	if limit <= 0 {
		return nil, ""
	}
	it := s.view.Load().tree.Root().Iterator()
	start := []byte(prefix)
	if after >= prefix {
		// The smallest key greater than after.
		start = append([]byte(after), 0)
	}
	it.SeekLowerBound(start)
	for {
		k, _, ok := it.Next()
		if !ok || !bytes.HasPrefix(k, []byte(prefix)) {
			break
		}
		if len(keys) == limit {
			return keys, keys[limit-1]
		}
		keys = append(keys, string(k))
	}
	return keys, ""
}

// Snapshot is a point-in-time view of the store at an applied index. It
// shares the store's immutable tree, so it costs nothing to take and no
// write waits for it; it keeps the values of its time alive until it is
// dropped.
type Snapshot struct {
	Index uint64
	tree  *iradix.Tree[[]byte]
	meta  map[string]string
}

// Snapshot returns the current view in O(1).
func (s *Store) Snapshot() *Snapshot {
	v := s.view.Load()
	return &Snapshot{Index: v.applied, tree: v.tree, meta: v.meta}
}

// Len is the number of keys in the snapshot.
func (sn *Snapshot) Len() int { return sn.tree.Len() }

const snapshotMagic = "KVSNAP01"

// WriteTo encodes the snapshot: the magic "KVSNAP01", the applied index
// (8 bytes, big endian), the key count (uvarint), then for each key its
// length (uvarint), the key, the value's length (uvarint) and the value;
// then the metadata the same way (count, then key and value pairs).
// Integrity is the snapshot store's job (hashicorp/raft checksums the file).
//
// The keys come in byte order (the tree's order). The format does not
// require any order, and Restore accepts any: snapshots written by earlier
// versions, which wrote the keys in map order, restore as before, and
// earlier versions restore these.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	var n int64
	var hdr [8 + 8 + binary.MaxVarintLen64]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint64(hdr[8:], sn.Index)
	h := binary.AppendUvarint(hdr[:16], uint64(sn.tree.Len()))
	c, err := bw.Write(h)
	n += int64(c)
	if err != nil {
		return n, err
	}
	var kb, vb [binary.MaxVarintLen64]byte
	pair := func(k, v []byte) error {
		for _, part := range [][]byte{binary.AppendUvarint(kb[:0], uint64(len(k))), k, binary.AppendUvarint(vb[:0], uint64(len(v))), v} {
			c, err := bw.Write(part)
			n += int64(c)
			if err != nil {
				return err
			}
		}
		return nil
	}
	it := sn.tree.Root().Iterator()
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		if err := pair(k, v); err != nil {
			return n, err
		}
	}
	c, err = bw.Write(binary.AppendUvarint(kb[:0], uint64(len(sn.meta))))
	n += int64(c)
	if err != nil {
		return n, err
	}
	for k, v := range sn.meta {
		if err := pair([]byte(k), []byte(v)); err != nil {
			return n, err
		}
	}
	return n, bw.Flush()
}

// SnapshotHeader returns the applied index and the key count a snapshot
// written by WriteTo starts with, without consuming anything from br.
func SnapshotHeader(br *bufio.Reader) (index, keys uint64, err error) {
	hdr, err := br.Peek(16)
	if err != nil {
		return 0, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if string(hdr[:8]) != snapshotMagic {
		return 0, 0, fmt.Errorf("%w: not a store snapshot", ErrCorruptEvent)
	}
	index = binary.BigEndian.Uint64(hdr[8:])
	rest, _ := br.Peek(16 + binary.MaxVarintLen64)
	keys, n := binary.Uvarint(rest[16:])
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: snapshot key count", ErrCorruptEvent)
	}
	return index, keys, nil
}

// MetaKeys returns the cluster metadata keys.
func (s *Store) MetaKeys() []string {
	return slices.Sorted(maps.Keys(s.view.Load().meta))
}

// Restore replaces the whole store with a snapshot written by WriteTo.
func (s *Store) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var hdr [16]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if string(hdr[:8]) != snapshotMagic {
		return fmt.Errorf("%w: not a store snapshot", ErrCorruptEvent)
	}
	index := binary.BigEndian.Uint64(hdr[8:])
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("read snapshot key count: %w", err)
	}
	// One transaction for the whole snapshot; nobody sees it before the
	// new root is published.
	txn := iradix.New[[]byte]().Txn()
	var pairs int64
	readBytes := func() ([]byte, error) {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if l > 1<<32 {
			return nil, fmt.Errorf("%w: length %d", ErrCorruptEvent, l)
		}
		if l <= 64<<10 {
			b := make([]byte, l)
			_, err = io.ReadFull(br, b)
			return b, err
		}
		// A long value is read as it arrives, not allocated on the word
		// of a length field: a damaged or forged snapshot (a backup is
		// checksummed, not signed) must not make the node allocate 4 GiB.
		var buf bytes.Buffer
		if _, err := io.CopyN(&buf, br, int64(l)); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	for i := uint64(0); i < count; i++ {
		k, err := readBytes()
		if err != nil {
			return fmt.Errorf("read snapshot key %d of %d: %w", i, count, noEOF(err))
		}
		v, err := readBytes()
		if err != nil {
			return fmt.Errorf("read snapshot value %d of %d: %w", i, count, noEOF(err))
		}
		if old, replaced := txn.Insert(k, v); replaced {
			pairs -= pairBytes(string(k), old)
		}
		pairs += pairBytes(string(k), v)
	}
	metaCount, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("read snapshot metadata count: %w", noEOF(err))
	}
	meta := make(map[string]string, min(metaCount, 1024))
	for i := uint64(0); i < metaCount; i++ {
		k, err := readBytes()
		if err != nil {
			return fmt.Errorf("read snapshot metadata: %w", noEOF(err))
		}
		v, err := readBytes()
		if err != nil {
			return fmt.Errorf("read snapshot metadata: %w", noEOF(err))
		}
		meta[string(k)] = string(v)
	}
	s.mu.Lock()
	s.view.Store(&view{tree: txn.CommitOnly(), meta: meta, applied: index, pairs: pairs})
	s.mu.Unlock()
	s.wake(index)
	return nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
