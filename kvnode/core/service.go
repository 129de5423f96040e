package core

import (
	"context"
	"encoding/binary"
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
	// c is Linearizable or Strict.
	ReadBarrier(ctx context.Context, c Consistency) error
}

// KV is what the front ends (REST in package rest, gRPC in package
// grpcapi) need from the store; Service implements it.
type KV interface {
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	Get(ctx context.Context, key string, c Consistency) ([]byte, error)
	List(ctx context.Context, prefix, after string, limit int, c Consistency) ([]string, string, error)
	Limits() Limits
}

// Consistency selects how fresh a read must be.
type Consistency int

const (
	// Linearizable reads see every write acknowledged before they started.
	// The leader may prove that it still leads with its read lease, which
	// relies on bounded clock rates, instead of a quorum round.
	Linearizable Consistency = iota
	// Stale reads return this node's copy, which may lag the leader.
	Stale
	// Strict reads are linearizable reads for which the leader always
	// makes a quorum round, never the lease: they rely on no clock.
	Strict
)

// Limits bound what a client may store, so that one request cannot fill
// the disk (the book leaves sizes unbounded).
type Limits struct {
	MaxKeyBytes   int
	MaxValueBytes int
}

// DefaultLimits are the limits of a node that was given none.
var DefaultLimits = Limits{MaxKeyBytes: 1024, MaxValueBytes: 1 << 20}

// WithDefaults fills the limits that are not set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = DefaultLimits.MaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultLimits.MaxValueBytes
	}
	return l
}

// CheckKey reports whether key is acceptable.
func (l Limits) CheckKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > l.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrKeyTooLarge, len(key), l.MaxKeyBytes)
	}
	return nil
}

// CheckValue reports whether value is acceptable.
func (l Limits) CheckValue(value []byte) error {
	if len(value) > l.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, len(value), l.MaxValueBytes)
	}
	return nil
}

// CheckEvent holds an event that arrives already encoded (a write a
// follower forwards) to the limits a client's write is held to.
func (l Limits) CheckEvent(e Event) error {
	if err := l.CheckKey(e.Key); err != nil {
		return err
	}
	return l.CheckValue(e.Value)
}

// MaxEventBytes is the encoded size of the largest event within the
// limits: the bound on a body that carries one.
func (l Limits) MaxEventBytes() int {
	return 1 + binary.MaxVarintLen64 + l.MaxKeyBytes + l.MaxValueBytes
}

// Service is the store's application service: validation, then
// replication for writes and a read barrier for linearizable reads.
type Service struct {
	store  *Store
	repl   Replicator
	limits Limits
}

// NewService wires the store to its replicator.
func NewService(store *Store, repl Replicator, limits Limits) *Service {
	return &Service{store: store, repl: repl, limits: limits.WithDefaults()}
}

// Limits returns the limits in force.
func (s *Service) Limits() Limits { return s.limits }

// CheckKey reports whether key is acceptable.
func (s *Service) CheckKey(key string) error { return s.limits.CheckKey(key) }

// Put sets key to value. It returns once the write is durable on a quorum
// and applied here. Putting the same value twice has the effect of once.
func (s *Service) Put(ctx context.Context, key string, value []byte) error {
	e := Event{Type: EventPut, Key: key, Value: value}
	if err := s.limits.CheckEvent(e); err != nil {
		return err
	}
	return s.repl.Propose(ctx, e)
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
	return s.repl.ReadBarrier(ctx, c)
}
