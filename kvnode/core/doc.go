// Package core owns the key-value store itself: the in-memory tree of
// keys, the events that change it, the sentinel errors every adapter maps
// to its own protocol, and the ports (interfaces) through which the store
// reaches replication. Besides the standard library it imports only
// hashicorp/go-immutable-radix (the tree, see Store); adapters such as
// txlog, cluster and rest depend on core, never the other way round.
//
// A write never touches the tree directly. Service.Put and Service.Delete
// validate the request and hand an Event to the Replicator port, which
// returns only once the event is durable and applied to the Store
// (through Store.Apply or Store.ApplyBatch, called by the replicated state
// machine). That is the fix for the book's store, which changed the map
// first and logged afterwards, asynchronously, without fsync.
package core
