package core

import (
	"context"
	"fmt"
)

// Replicator is the port through which the store is changed and read
// consistently. The cluster adapter implements it with Raft.
type Replicator interface {
	// Propose orders e in the replicated log and returns once it is
	// committed and applied to the local Store. An error other than a
	// context error means the event was not applied; after a context error
	// the outcome is unknown.
	Propose(ctx context.Context, e Event) error
	// ReadBarrier returns once the local Store reflects every write that was
	// committed anywhere before the call: reads after it are linearizable.
	ReadBarrier(ctx context.Context) error
}

// Consistency selects how fresh a read must be.
type Consistency int

const (
	// Linearizable reads see every write acknowledged before they started.
	Linearizable Consistency = iota
	// Stale reads return this node's copy, which may lag the leader.
	Stale
)

// Limits bound what a client may store, so that one request cannot fill
// the disk (the book leaves sizes unbounded).
type Limits struct {
	MaxKeyBytes   int
	MaxValueBytes int
}

// DefaultLimits are the limits of a node that was given none.
var DefaultLimits = Limits{MaxKeyBytes: 1024, MaxValueBytes: 1 << 20}

// Service is the store's application service: validation, then
// replication for writes and a read barrier for linearizable reads.
type Service struct {
	store  *Store
	repl   Replicator
	limits Limits
}

// NewService wires the store to its replicator.
func NewService(store *Store, repl Replicator, limits Limits) *Service {
	if limits.MaxKeyBytes <= 0 {
		limits.MaxKeyBytes = DefaultLimits.MaxKeyBytes
	}
	if limits.MaxValueBytes <= 0 {
		limits.MaxValueBytes = DefaultLimits.MaxValueBytes
	}
	return &Service{store: store, repl: repl, limits: limits}
}

// Limits returns the limits in force.
func (s *Service) Limits() Limits { return s.limits }

// CheckKey reports whether key is acceptable.
func (s *Service) CheckKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > s.limits.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrKeyTooLarge, len(key), s.limits.MaxKeyBytes)
	}
	return nil
}

// Put sets key to value. It returns once the write is durable on a quorum
// and applied here. Putting the same value twice has the effect of once.
func (s *Service) Put(ctx context.Context, key string, value []byte) error {
	if err := s.CheckKey(key); err != nil {
		return err
	}
	if len(value) > s.limits.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, len(value), s.limits.MaxValueBytes)
	}
	return s.repl.Propose(ctx, Event{Type: EventPut, Key: key, Value: value})
}

// Delete removes key. Deleting a missing key succeeds (idempotent).
func (s *Service) Delete(ctx context.Context, key string) error {
	if err := s.CheckKey(key); err != nil {
		return err
	}
	return s.repl.Propose(ctx, Event{Type: EventDelete, Key: key})
}

// Get returns the value of key, or ErrNoSuchKey.
func (s *Service) Get(ctx context.Context, key string, c Consistency) ([]byte, error) {
	if err := s.CheckKey(key); err != nil {
		return nil, err
	}
	if err := s.barrier(ctx, c); err != nil {
		return nil, err
	}
	return s.store.Get(key)
}

// List returns a page of keys; see Store.List.
func (s *Service) List(ctx context.Context, prefix, after string, limit int, c Consistency) ([]string, string, error) {
	if err := s.barrier(ctx, c); err != nil {
		return nil, "", err
	}
	keys, next := s.store.List(prefix, after, limit)
	return keys, next, nil
}

func (s *Service) barrier(ctx context.Context, c Consistency) error {
	if c == Stale {
		return nil
	}
	return s.repl.ReadBarrier(ctx)
}
