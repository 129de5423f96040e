// Package cluster owns replication: the Raft adapter that makes the core
// store one consistent store across kvnode processes. It runs
// hashicorp/raft with the txlog package as its log, applies committed
// entries to core.Store through a state machine, takes and restores
// snapshots, carries peer traffic over mutual TLS, and implements the
// core.Replicator port (writes through the log, linearizable reads through
// a read index). It serves the membership API (Handler), whose paths and
// bodies are declared in package clusterapi.
//
// A single node is a one-member Raft cluster: adding members later is a
// membership change, not a different code path.
package cluster
