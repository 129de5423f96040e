// Package cluster owns replication: the Raft adapter that makes the core
// store one consistent store across kvnode processes. It runs
// hashicorp/raft with the txlog package as its log, applies committed
// entries to core.Store through a state machine, takes and restores
// snapshots, carries peer traffic over mutual TLS, and implements the
// core.Replicator port (writes through the log, linearizable reads through
// a read index). It serves the membership API (Handler), whose paths and
// bodies are declared in package clusterapi.
//
// Followers reach the leader through the internal calls
// (clusterapi.PathInternal: propose, read index, status), on the API port.
// Those are for members only, as the Raft port is: a proposal goes
// straight into the log every replica stores, so one accepted from anyone
// would let anyone write past the API's checks into every replica. Handler
// answers them only to callers Authorizers.Peer accepts; kvnode accepts
// the peer certificate (which Config.APIClient presents), or on a node
// without one, loopback callers. The leader holds a forwarded event to
// Config.Limits, as the API holds a client's, and reads no more of a
// proposal's body than the largest event within them.
//
// A node keeps a disk budget (storage.go): room on its volume for its next
// snapshot, one more log segment, and a floor for DELETEs and raft's own
// writes. When the room runs low it snapshots and compacts; when it is
// short it refuses PUTs with core.ErrNoSpace before they enter the log,
// and takes them again by itself once there is room.
//
// A single node is a one-member Raft cluster: adding members later is a
// membership change, not a different code path.
package cluster
