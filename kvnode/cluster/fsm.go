package cluster

import (
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// fsm applies committed log entries to the core store. It sees every
// entry that raft hands to a state machine (commands and configurations)
// and marks each applied, so that the store's applied index can be waited
// on for any committed index after the leader's first entry of a term.
type fsm struct {
	store *core.Store
	// onMeta sees every metadata entry as it is applied, with its term.
	onMeta func(key, value string, term uint64)
	// onRestore runs after the store is replaced by a snapshot.
	onRestore func()
	// onApplied sees the bytes of the entries applied (the disk budget's
	// watcher on a follower).
	onApplied func(bytes int)
	// snaps counts the snapshots this node persisted or restored, and
	// snapBytes is the size of the last one: the snapshot cadence
	// (snapshotCadence) measures the log against it.
	snaps     atomic.Uint64
	snapBytes atomic.Int64
}

var (
	_ raft.BatchingFSM        = (*fsm)(nil)
	_ raft.ConfigurationStore = (*fsm)(nil)
)

// Apply applies one entry. An empty command is a fence the leader writes
// when it takes office; it changes nothing.
func (f *fsm) Apply(l *raft.Log) any {
	if f.onApplied != nil {
		f.onApplied(len(l.Data))
	}
	if len(l.Data) == 0 {
		f.store.MarkApplied(l.Index)
		return nil
	}
	e, err := core.UnmarshalEvent(l.Data)
	if err != nil {
		// Every node fails the same entry the same way, so the replicas
		// stay identical; the proposer gets the error.
		f.store.MarkApplied(l.Index)
		return err
	}
	f.store.Apply(l.Index, e)
	if e.Type == core.EventMeta && f.onMeta != nil {
		f.onMeta(e.Key, string(e.Value), l.Term)
	}
	return nil
}

// ApplyBatch applies entries committed together. The store applies them
// in one transaction and publishes one new view (core.Store.ApplyBatch); a
// metadata entry is applied at its place in the batch before onMeta sees it.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	batch := make([]core.Indexed, 0, len(logs))
	if f.onApplied != nil {
		n := 0
		for _, l := range logs {
			n += len(l.Data)
		}
		f.onApplied(n)
	}
	for i, l := range logs {
		if l.Type == raft.LogConfiguration || len(l.Data) == 0 {
			// Advances the applied index only (an event of no type).
			batch = append(batch, core.Indexed{Index: l.Index})
			continue
		}
		e, err := core.UnmarshalEvent(l.Data)
		if err != nil {
			// As in Apply: the same on every node; the proposer gets it.
			out[i] = err
			batch = append(batch, core.Indexed{Index: l.Index})
			continue
		}
		batch = append(batch, core.Indexed{Index: l.Index, Event: e})
		if e.Type == core.EventMeta && f.onMeta != nil {
			f.store.ApplyBatch(batch)
			batch = batch[:0]
			f.onMeta(e.Key, string(e.Value), l.Term)
		}
	}
	f.store.ApplyBatch(batch)
	return out
}

// StoreConfiguration is called for membership changes; they do not touch
// the data but they are committed indexes readers may wait for.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.store.MarkApplied(index)
}

// Snapshot takes the store's current view, in O(1). It runs on raft's FSM
// goroutine, which is blocked only for that; raft calls Persist on another
// goroutine, which streams the view while entries go on being applied.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot(), done: f.snapshotDone}, nil
}

// Restore replaces the store with a snapshot's contents.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	cr := &countingReader{r: rc}
	if err := f.store.Restore(cr); err != nil {
		return err
	}
	f.snapshotDone(cr.n)
	if f.onRestore != nil {
		f.onRestore()
	}
	return nil
}

func (f *fsm) snapshotDone(size int64) {
	f.snapBytes.Store(size)
	f.snaps.Add(1)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type fsmSnapshot struct {
	snap *core.Snapshot
	done func(size int64)
}

// Persist streams the view; raft calls it off the FSM goroutine.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	n, err := s.snap.WriteTo(sink)
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if s.done != nil {
		s.done(n)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}
