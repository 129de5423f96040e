// Package pglog owns the Postgres mode of kvnode: the book's
// PostgresTransactionLogger grown into a shared, sequenced log that any
// number of stateless kvnodes write to and apply from. It implements
// core.Replicator, as package cluster does with Raft.
//
// # Schema
//
// Four tables, created and migrated by Open (schema.go) under an advisory
// lock, so that nodes starting together do not race:
//
//   - kv_schema_version: one row, the schema's version. A database newer
//     than this kvnode is refused, by name.
//   - kv_head: one row, the sequence of the last committed event and the
//     store the database belongs to (a second store pointed at it is
//     refused).
//   - transactions: the log, the book's table (sequence, event_type, key,
//     value), with bytea keys and values because a key may hold any bytes
//     and TEXT holds neither NUL nor invalid UTF-8.
//   - kv_state: every live key and its value, written in the same
//     transaction as the log rows, so that the log can be pruned and a node
//     can start from the state instead of replaying history.
//
// # Why sequence order is commit order
//
// A BIGSERIAL hands out numbers when rows are inserted, not when their
// transactions commit: T1 takes 5, T2 takes 6, T2 commits, a node applies
// 6, then T1 commits 5 behind it. Here a write transaction takes its
// sequences by incrementing the one row of kv_head (UPDATE … RETURNING),
// and that row stays locked until the transaction ends. A second writer's
// UPDATE waits for the lock and then, under READ COMMITTED, re-reads the
// row as the first committed it. So sequences are handed out in commit
// order, with no gaps: a transaction that aborts returns its numbers. And
// PostgreSQL makes a transaction visible before it releases its locks, so
// any snapshot that sees the transaction holding sequence n also sees every
// transaction below n: what a node reads from the log is always a prefix.
// A node that finds a gap has fallen behind a pruning and reloads the state.
//
// The changes are a second statement after the one that takes the head
// row's lock, so that their READ COMMITTED snapshot is taken after the
// lock was granted and sees every write before them. In one statement the
// snapshot would predate the lock wait, and a DELETE would miss a key the
// transaction just ahead had inserted: kv_state would then disagree with
// the log (TestTheStateTableFollowsTheLog).
//
// # Durability and acknowledgement
//
// A write is acknowledged once the implicit transaction holding its log
// row has committed, which is durable as PostgreSQL is configured to make
// it (synchronous_commit on, fsync on: the defaults; with a synchronous
// standby, also on the standby). A write whose commit answer is lost (the
// connection drops after the COMMIT was sent) is reported as indeterminate,
// as in Raft mode; PUT and DELETE may be retried.
//
// # Reads
//
// A linearizable read reads kv_head's sequence in a query sent after the
// read began, then waits until this node has applied that sequence. Every
// write acknowledged before the read began had committed, so its sequence
// is at or below the one read. Concurrent reads share one such query, which
// is still sent after each of them began. Strict reads are the same: this
// mode has no lease and relies on no clock. Stale reads answer from the
// node's copy, which trails the log by the notification latency.
//
// # What it assumes
//
// PostgreSQL's own guarantees: READ COMMITTED row locks, atomic commit,
// visibility before lock release, and durability of committed
// transactions. If PostgreSQL loses a committed transaction (fsync off, an
// asynchronous standby promoted), acknowledged writes are lost with it, and
// a node that applied them keeps a copy the log no longer has: after such a
// failover, restart the kvnodes. With a synchronous standby, a commit
// whose wait for the standby is cancelled (this node's 5 s query deadline,
// or its shutdown) becomes visible on the primary anyway: its writer was
// told the outcome is unknown, but other nodes may serve it, and a
// failover before the standby has it takes it back. Keep the standby's
// lag well under the query deadline. Connections ask for a read-write
// server (target_session_attrs), so a standby never answers the head
// query, and a database with synchronous_commit off is refused. The tests that would catch a violation are
// TestSequenceIsCommitOrder (concurrent writers, every node applies the
// same sequence) and test/cluster's TestLinearizablePostgres (kills
// kvnodes, restarts PostgreSQL, checks the history).
package pglog
