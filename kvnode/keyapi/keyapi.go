// Package keyapi owns the contract between a kvnode and its clients over
// REST: the paths of the key routes, their query parameters, the names of
// the read consistencies and the body of a list. The kvnode handler
// (package rest) serves these shapes and the client (package client)
// speaks them; nobody declares them again.
//
// It imports only the standard library, so that a user's program can
// depend on it without the server.
package keyapi

import "net/url"

// The key routes.
const (
	// PathKeyPrefix + the escaped key: PUT (body = value, 201), GET or
	// HEAD (200 + the raw value; 404 when missing), DELETE (200, also
	// when missing).
	PathKeyPrefix = "/v1/key/"
	// PathKeys: GET answers a ListPage.
	PathKeys = "/v1/keys"
)

// KeyPath is the path of key. Every byte of a key is allowed: "/" and
// escaped characters are escaped once more, and the server unescapes once.
func KeyPath(key string) string { return PathKeyPrefix + url.PathEscape(key) }

// Query parameters.
const (
	// QueryConsistency chooses a read's consistency (GET of a key or of
	// PathKeys): one of the Consistency values; empty is Linearizable.
	QueryConsistency = "consistency"
	// QueryPrefix, QueryAfter and QueryLimit select a page of PathKeys:
	// the keys with the prefix, strictly after QueryAfter, at most
	// QueryLimit of them (1 to MaxListLimit; DefaultListLimit when unset).
	QueryPrefix = "prefix"
	QueryAfter  = "after"
	QueryLimit  = "limit"
)

// Limits of a list page.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Consistency names a read's guarantee.
type Consistency string

const (
	// Linearizable (the default) reads the latest acknowledged write. The
	// leader may answer from its read lease (docs/read-consistency.md).
	Linearizable Consistency = "linearizable"
	// Strict is linearizable without the lease: the leader confirms its
	// leadership with a quorum round for the read.
	Strict Consistency = "strict"
	// Stale reads the answering member's copy, which may be behind.
	Stale Consistency = "stale"
)

// ListPage is the body of GET PathKeys. Pass Next as QueryAfter for the
// next page; it is empty on the last page.
type ListPage struct {
	Keys []string `json:"keys"`
	Next string   `json:"next,omitempty"`
}

// HeaderOutcome is set to OutcomeUnknown on a failed PUT or DELETE that
// may have been applied (the connection to the leader broke, or the
// deadline passed, after the write was proposed). Sending such a write
// again is not safe when others write the same key: it may overwrite a
// write acknowledged in between. A failure without it was not applied.
// Over gRPC the same case is DeadlineExceeded, whose meaning it is.
//
// OutcomeNotApplied says the opposite outright: the request was refused
// before anything of it was done (shed, or a batch of forwarded writes
// refused whole). The members rely on it, not on its absence, where a
// wrong guess would apply writes twice.
const (
	HeaderOutcome     = "X-Kv-Outcome"
	OutcomeUnknown    = "unknown"
	OutcomeNotApplied = "not-applied"
)

// HeaderLeader, on the answer to a PUT or DELETE, is the API URL of the
// member that leads, as the member that answered knows it; over gRPC,
// the response header MetadataLeader is the leader's gRPC address. A
// client may send its next writes there, and save the hop from a
// follower to the leader (kvnode/client's Config.LeaderWrites). It is a
// hint: the leader may change at any time, and a write sent to a member
// that no longer leads is forwarded as any other.
const (
	HeaderLeader   = "X-Kv-Leader"
	MetadataLeader = "kv-leader"
)
