package core

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// Store is the in-memory state: a map from key to value plus the index of
// the last applied event. Only the replicated state machine calls Apply and
// Restore; everyone else reads.
//
// Values are never mutated after they are stored, so readers and snapshots
// may hold on to them without copying.
type Store struct {
	mu      sync.RWMutex
	m       map[string][]byte
	meta    map[string]string
	applied uint64

	wmu     sync.Mutex
	waiters []waiter
}

type waiter struct {
	index uint64
	ch    chan struct{}
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{m: make(map[string][]byte), meta: map[string]string{}} }

// Meta returns a cluster metadata value ("" when unset).
func (s *Store) Meta(key string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.meta[key]
}

// Get returns the value of key, or ErrNoSuchKey.
func (s *Store) Get(key string) ([]byte, error) {
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	if !ok {
		return nil, ErrNoSuchKey
	}
	return v, nil
}

// Len is the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// AppliedIndex is the log index of the last event applied.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Apply applies e, committed at log index, and wakes readers waiting for
// that index. Indexes must not go backwards; an index that does not advance
// is ignored so that a replay cannot apply an event twice.
func (s *Store) Apply(index uint64, e Event) {
	s.mu.Lock()
	if index != 0 && index <= s.applied {
		s.mu.Unlock()
		return
	}
	switch e.Type {
	case EventPut:
		s.m[e.Key] = e.Value
	case EventDelete:
		delete(s.m, e.Key)
	case EventMeta:
		if len(e.Value) == 0 {
			delete(s.meta, e.Key)
		} else {
			s.meta[e.Key] = string(e.Value)
		}
	}
	s.setAppliedLocked(index)
	s.mu.Unlock()
	s.wake(index)
}

// MarkApplied advances the applied index for log entries that carry no
// event (Raft's no-ops and configuration changes), so that WaitApplied does
// not wait for an event that will never come.
func (s *Store) MarkApplied(index uint64) {
	s.mu.Lock()
	s.setAppliedLocked(index)
	s.mu.Unlock()
	s.wake(index)
}

func (s *Store) setAppliedLocked(index uint64) {
	if index > s.applied {
		s.applied = index
	}
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
// ("" when there is none).
func (s *Store) List(prefix, after string, limit int) (keys []string, next string) {
	if limit <= 0 {
		return nil, ""
	}
	s.mu.RLock()
	for k := range s.m {
		if k > after && strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.RUnlock()
	sort.Strings(keys)
	if len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1]
	}
	return keys, next
}

// Snapshot is a frozen copy of the store taken at an applied index.
type Snapshot struct {
	Index uint64
	m     map[string][]byte
	meta  map[string]string
}

// Snapshot copies the map (not the values, which are immutable). The copy
// is taken under the read lock, so writes wait for at most one map copy.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[string][]byte, len(s.m))
	for k, v := range s.m {
		m[k] = v
	}
	meta := make(map[string]string, len(s.meta))
	for k, v := range s.meta {
		meta[k] = v
	}
	return &Snapshot{Index: s.applied, m: m, meta: meta}
}

const snapshotMagic = "KVSNAP01"

// WriteTo encodes the snapshot: the magic "KVSNAP01", the applied index
// (8 bytes, big endian), the key count (uvarint), then for each key its
// length (uvarint), the key, the value's length (uvarint) and the value;
// then the metadata the same way (count, then key and value pairs).
// Integrity is the snapshot store's job (hashicorp/raft checksums the file).
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	var n int64
	var hdr [8 + 8 + binary.MaxVarintLen64]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint64(hdr[8:], sn.Index)
	h := binary.AppendUvarint(hdr[:16], uint64(len(sn.m)))
	c, err := bw.Write(h)
	n += int64(c)
	if err != nil {
		return n, err
	}
	var kb, vb [binary.MaxVarintLen64]byte
	pair := func(k string, v []byte) error {
		for _, part := range [][]byte{binary.AppendUvarint(kb[:0], uint64(len(k))), []byte(k), binary.AppendUvarint(vb[:0], uint64(len(v))), v} {
			c, err := bw.Write(part)
			n += int64(c)
			if err != nil {
				return err
			}
		}
		return nil
	}
	for k, v := range sn.m {
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
		if err := pair(k, []byte(v)); err != nil {
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.meta))
	for k := range s.meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
	m := make(map[string][]byte, min(count, 1<<20))
	readBytes := func() ([]byte, error) {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if l > 1<<32 {
			return nil, fmt.Errorf("%w: length %d", ErrCorruptEvent, l)
		}
		b := make([]byte, l)
		_, err = io.ReadFull(br, b)
		return b, err
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
		m[string(k)] = v
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
	s.m = m
	s.meta = meta
	s.applied = index
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
