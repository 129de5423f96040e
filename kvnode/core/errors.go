package core

import "errors"

// Sentinel errors. Adapters match them with errors.Is and translate them to
// their protocol in exactly one place (for REST: rest.statusFor).
var (
	// ErrNoSuchKey: the key is not in the store.
	ErrNoSuchKey = errors.New("no such key")
	// ErrEmptyKey: keys must have at least one byte.
	ErrEmptyKey = errors.New("key must not be empty")
	// ErrKeyTooLarge: the key is longer than Limits.MaxKeyBytes.
	ErrKeyTooLarge = errors.New("key too large")
	// ErrValueTooLarge: the value is longer than Limits.MaxValueBytes.
	ErrValueTooLarge = errors.New("value too large")
	// ErrNotLeader: this node cannot order writes and could not reach a node that can.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnavailable: no leader is known (an election is running) or the node is shutting down.
	ErrUnavailable = errors.New("cluster unavailable")
	// ErrIndeterminate: the write was handed to the leader but the answer was
	// lost (leadership changed, the deadline passed): it may or may not have
	// been applied. Retrying a PUT or DELETE is safe; the client decides.
	ErrIndeterminate = errors.New("outcome unknown: the write may or may not have been applied")
	// ErrNoSpace: the node keeps its disk's last room for a snapshot and
	// for DELETEs, and a PUT would use it. Nothing was written; the PUT
	// may be retried once space is freed (DELETEs, a compaction) or the
	// volume grows.
	ErrNoSpace = errors.New("insufficient storage: the volume is full")
	// ErrCorruptEvent: a replicated command could not be decoded.
	ErrCorruptEvent = errors.New("corrupt event")
)
