package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

type raftLogger = hclog.Logger

// Config is what a node needs to take part in a cluster.
type Config struct {
	// NodeID is the node's stable identity (the StatefulSet pod name).
	NodeID string
	// DataDir holds the log and the snapshots.
	DataDir string
	// PeerBind is the address raft listens on; PeerAdvertise is the one
	// other members dial (a stable DNS name in Kubernetes).
	PeerBind, PeerAdvertise string
	// PeerTLS, when set, makes peer traffic mutual TLS.
	PeerTLS *tls.Config
	// Bootstrap starts a new one-member cluster when the data directory
	// has no Raft state. It is ignored when state exists.
	Bootstrap bool
	// SnapshotThreshold is the number of log entries after which a
	// snapshot is taken and the log compacted; TrailingLogs are kept.
	SnapshotThreshold, TrailingLogs uint64
	// SnapshotInterval is how often the threshold is checked.
	SnapshotInterval time.Duration
	// SnapshotLogRatio and SnapshotMinLogBytes set the snapshot cadence
	// that follows the data: a snapshot is taken once the log has grown,
	// since the last one, by SnapshotLogRatio times that snapshot's size,
	// and by at least SnapshotMinLogBytes (see snapshotCadence). It is
	// checked every SnapshotCheck. Zero values take the defaults; a
	// negative ratio turns the rule off (only the threshold applies).
	SnapshotLogRatio    float64
	SnapshotMinLogBytes int64
	SnapshotCheck       time.Duration
	// Logger receives raft's logs.
	Logger hclog.Logger
	// LogObserver receives transaction-log timings.
	LogObserver txlog.Observer
	// APIAdvertise is the URL other members use to reach this node's API
	// (https://kvs-0.kvs-peers.ns.svc:8080): followers forward writes and
	// linearizable reads to the leader there.
	APIAdvertise string
	// GRPCAdvertise is the address clients reach this node's gRPC API at,
	// which the other members name to clients as the leader's (LeaderHint);
	// "" when it serves none.
	GRPCAdvertise string
	// APIClient makes those calls; it must trust the members' server
	// certificates and present this member's peer certificate, the
	// identity the internal calls require. nil means http.DefaultClient.
	APIClient *http.Client
	// Limits are the API's key and value limits. Writes forwarded by
	// followers are held to them here, on the leader, before they enter
	// the log that every replica stores. Zero fields take core.DefaultLimits.
	Limits core.Limits
	// CatchUpLag is how many entries a non-voter may trail the leader's
	// commit index and still be promoted.
	CatchUpLag uint64
	// ReadLease lets the leader answer linearizable reads without a quorum
	// round for half a heartbeat timeout after one (see readLease). It
	// assumes that the members' clocks run at rates within a factor of two
	// of each other. Off, every linearizable read is strict.
	ReadLease bool
	// RestoreFrom is a backup file (package backup) that a node on an
	// empty data directory starts a new cluster from; see restore.
	RestoreFrom string
	// RecoverAlone, when set, is a token: once per token, before raft
	// starts, the configuration is reset to this member alone (see
	// recoverAlone). For a survivor of a lost quorum.
	RecoverAlone string
	// Restart, when set, stops the process so that it starts again (its
	// supervisor restarts it): a recovery requested over the API runs at
	// the next start.
	Restart func()
	// SegmentBytes is the room for records in one segment of the log;
	// zero fits it to the volume (fitSegment).
	SegmentBytes int64
	// Fast shortens raft's timers for tests on loopback.
	Fast bool
}

// Node is one member of a kvnode cluster.
type Node struct {
	cfg   Config
	store *core.Store
	log   *txlog.Log
	snaps raft.SnapshotStore
	vol   *volume
	// storage keeps the disk budget (storage.go).
	storage *storage
	raft    *raft.Raft
	trans   raft.Transport

	rounds       *batcher      // quorum rounds, when this node leads
	confirms     *batcher      // confirmation rounds for strict reads, when this node leads
	confirmed    atomic.Uint64 // confirmation rounds that succeeded (tests)
	applyLag     lagWatch
	remote       *batcher // read indexes fetched from the leader, when it does not
	remoteStrict *batcher // the same, each from a quorum round of the leader
	client       *http.Client
	forwards     *forwarder
	hint         leaderHint
	hintSelf     bool // cfg.APIAdvertise can be dialled by others
	// batchesServed bounds the batches of forwarded writes applied at
	// once (proposeBatch).
	batchesServed chan struct{}
	// running is n.raft once it exists, for the transport's goroutine.
	running atomic.Pointer[raft.Raft]

	// lease lets the leader skip the quorum round for half a heartbeat
	// timeout after one (see readLease).
	lease *readLease
	// clock is the monotonic time since the node started; voteHold is how
	// long after that it refuses votes (restartVoteGuard).
	clock    func() time.Duration
	voteHold time.Duration

	// logScan guards what clusterID found in the log: the ID, once found,
	// and the last index it looked at.
	logScan  sync.Mutex
	loggedID string
	scanned  uint64

	// staleLogAfter is how long raft's last index may stay past the
	// log's before the node is not live (Live); staleLogSince is when
	// Live first saw it so, zero while it is not.
	staleLogAfter time.Duration
	staleLogMu    sync.Mutex
	staleLogSince time.Time

	mu sync.Mutex
	// readyTerm is the term whose leader's fence (watchLeadership) this
	// node committed, as long as it leads in it; 0 otherwise. readyChanged
	// is closed, and replaced, whenever it changes.
	readyTerm    atomic.Uint64
	readyChanged chan struct{}
	closed       chan struct{}
	wg           sync.WaitGroup
}

// Open starts raft on the data directory and returns the running node.
func Open(cfg Config, store *core.Store) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: a node ID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	// Votes are refused for a while from here on, before any peer can reach
	// this process (restartVoteGuard).
	clock := monotonicClock()
	// The log is opened first and closed last (closeStorage) because it
	// holds the flock that makes the data directory this process's: a
	// second kvnode on the same directory fails here, before it touches the
	// snapshots or starts raft, and the lock covers everything this node
	// writes there until it has stopped.
	segment := cfg.SegmentBytes
	if segment <= 0 {
		_, capacity, err := volumeSpace(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		segment = fitSegment(capacity)
	}
	log, err := txlog.Open(filepath.Join(cfg.DataDir, "log"), txlog.Options{SegmentBytes: segment, Observer: cfg.LogObserver})
	if err != nil {
		return nil, err
	}
	storage := newStorage(cfg.DataDir, log, store)
	// One snapshot is kept, not two: the disk budget reserves room for
	// the next one while the last one is on disk, and an older one is no
	// fallback once the log is compacted past it.
	snapDir := filepath.Join(cfg.DataDir, "snapshots")
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 1, cfg.Logger.Named("snapshots"))
	if err != nil {
		_ = log.Close()
		return nil, err
	}
	// What a crash or a full volume left of a snapshot being written.
	removeTemporarySnapshots(snapDir)
	snaps := &budgetSnapshots{SnapshotStore: fileSnaps, dir: snapDir, storage: storage}
	hasState, err := raft.HasExistingState(log, log, snaps)
	if err != nil {
		_ = log.Close()
		return nil, err
	}
	// The incarnation is written before any Raft state, so a volume with
	// Raft state and no incarnation can only be one from before they
	// existed (admitted); see openVolume.
	vol, err := openVolume(cfg.DataDir, hasState, cfg.Bootstrap || cfg.RestoreFrom != "")
	if err != nil {
		_ = log.Close()
		return nil, err
	}
	trans, err := newTransport(cfg.PeerBind, cfg.PeerAdvertise, cfg.PeerTLS, cfg.Logger.Named("transport"))
	if err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("cluster: peer listener: %w", err)
	}
	n := &Node{cfg: cfg, store: store, log: log, snaps: snaps, vol: vol, storage: storage, readyChanged: make(chan struct{}), closed: make(chan struct{}), client: cfg.APIClient, clock: clock, staleLogAfter: defaultStaleLogAfter}
	n.forwards = newForwarder(n)
	n.hintSelf = dialable(cfg.APIAdvertise)
	n.batchesServed = make(chan struct{}, batchesServedAtOnce)
	if n.client == nil {
		n.client = http.DefaultClient
	}
	n.cfg.Limits = n.cfg.Limits.WithDefaults()
	if n.cfg.CatchUpLag == 0 {
		n.cfg.CatchUpLag = 1000
	}
	if n.cfg.SnapshotLogRatio == 0 {
		n.cfg.SnapshotLogRatio = DefaultSnapshotLogRatio
	}
	if n.cfg.SnapshotMinLogBytes <= 0 {
		n.cfg.SnapshotMinLogBytes = DefaultSnapshotMinLogBytes
	}
	if n.cfg.SnapshotCheck <= 0 {
		n.cfg.SnapshotCheck = defaultSnapshotCheck
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = cfg.Logger
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	if cfg.Fast {
		rc.HeartbeatTimeout = 200 * time.Millisecond
		rc.ElectionTimeout = 200 * time.Millisecond
		rc.LeaderLeaseTimeout = 100 * time.Millisecond
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	// The lease lasts half the shortest time after which a follower that
	// heard from this leader stands for election or votes for another, so
	// that the clocks' rates may differ by up to a factor of two.
	leaseFor := rc.HeartbeatTimeout / 2
	if !cfg.ReadLease {
		leaseFor = 0
	}
	n.lease = newReadLease(leaseFor, clock)
	n.voteHold = rc.HeartbeatTimeout
	n.trans = newGuardedTransport(trans, n.mayCampaign, n, n.guards()...)
	if cfg.RestoreFrom != "" {
		if _, _, err := n.restore(cfg.RestoreFrom, hasState); err != nil {
			_ = n.closeStorage()
			return nil, err
		}
		hasState = true
	}

	if token := requestedRecovery(cfg.DataDir); token != "" {
		// A request that cannot be carried out is dropped, not retried at
		// every start: the node starts as it was, and whoever asked sees
		// that the cluster was not recovered.
		if err := n.recoverAlone(rc, token, hasState); err != nil {
			n.cfg.Logger.Error("the requested recovery failed; starting as before", "error", err)
		}
		if err := os.Remove(filepath.Join(cfg.DataDir, recoverRequestFile)); err != nil {
			_ = n.closeStorage()
			return nil, err
		}
	}
	if cfg.RecoverAlone != "" {
		if err := n.recoverAlone(rc, cfg.RecoverAlone, hasState); err != nil {
			_ = n.closeStorage()
			return nil, err
		}
	}
	cache, err := raft.NewLogCache(4096, log)
	if err != nil {
		_ = n.closeStorage()
		return nil, err
	}
	f := &fsm{store: store, onMeta: n.applyAdmission, onRestore: n.restoredAdmission, onApplied: storage.applied}
	r, err := raft.NewRaft(rc, f, cache, log, snaps, n.trans)
	if err != nil {
		_ = n.closeStorage()
		return nil, err
	}
	n.raft = r
	n.running.Store(r)
	n.rounds = newBatcher(n.quorumRound)
	n.confirms = newBatcher(n.confirmRound)
	n.remote = newBatcher(func(ctx context.Context) (uint64, error) { return n.leaderReadIndex(ctx, false) })
	n.remoteStrict = newBatcher(func(ctx context.Context) (uint64, error) { return n.leaderReadIndex(ctx, true) })
	if cfg.Bootstrap && !hasState {
		if err := n.bootstrap(); err != nil {
			_ = n.Shutdown()
			return nil, err
		}
	}
	n.wg.Add(2)
	go n.watchLeadership(notify)
	go n.watchStorage()
	if n.cfg.SnapshotLogRatio > 0 {
		n.wg.Add(1)
		go n.snapshotCadence(f)
	}
	return n, nil
}

// watchLeadership commits a fence entry whenever this node becomes leader.
// Until the fence of its term commits, a new leader's commit index may not
// cover what the previous leader committed, so linearizable reads wait.
// Readiness carries the term the fence committed in: a read checks it
// against raft's current term.
func (n *Node) watchLeadership(notify <-chan bool) {
	defer n.wg.Done()
	for {
		select {
		case <-n.closed:
			return
		case leader := <-notify:
			n.setReady(0)
			if !leader {
				continue
			}
			term := n.raft.CurrentTerm()
			if err := n.raft.Apply(nil, 0).Error(); err != nil {
				n.cfg.Logger.Warn("leadership fence failed", "error", err)
				continue
			}
			if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
				n.setReady(term)
				n.recordMetadata()
			}
		}
	}
}

// setReady records that the fence of term committed (0: not ready, and
// the lease ends).
func (n *Node) setReady(term uint64) {
	if term == 0 {
		n.lease.revoke()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.readyTerm.Load() == term {
		return
	}
	n.readyTerm.Store(term)
	close(n.readyChanged)
	n.readyChanged = make(chan struct{})
}

// awaitReady waits until this node's fence committed in term, in which it
// must lead.
func (n *Node) awaitReady(ctx context.Context, term uint64) error {
	for {
		n.mu.Lock()
		changed := n.readyChanged
		n.mu.Unlock()
		if n.readyTerm.Load() == term {
			return nil
		}
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return core.ErrNotLeader
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: the new leader has not committed its first entry", core.ErrUnavailable)
		case <-n.closed:
			return core.ErrUnavailable
		}
	}
}

// Propose implements core.Replicator. On a follower the event is
// forwarded to the leader; while no leader is known it waits, up to ctx's
// deadline, and retries only what was certainly not applied.
func (n *Node) Propose(ctx context.Context, e core.Event) error {
	cmd, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	// A node whose own volume is full refuses too, not only the leader:
	// it could not store the write it forwards.
	a, err := n.admit(e, len(cmd))
	if err != nil {
		return err
	}
	defer a.done()
	_, err = untilLeader(ctx, n, func() (struct{}, error) {
		api, _, err := n.leaderAPI()
		if err != nil {
			return struct{}{}, err
		}
		if api == "" {
			return struct{}{}, n.applyAdmitted(ctx, cmd, a)
		}
		return struct{}{}, n.forwards.propose(ctx, api, cmd)
	})
	return err
}

// ProposeLocal applies an encoded event on this node, which must lead. It
// serves writes forwarded by followers, and holds them to the same limits
// as a client's write (core.ErrEmptyKey, core.ErrKeyTooLarge,
// core.ErrValueTooLarge): whatever enters the log is stored by every
// replica and must be readable back by each of them.
func (n *Node) ProposeLocal(ctx context.Context, cmd []byte) error {
	e, err := core.UnmarshalEvent(cmd)
	if err != nil {
		return err
	}
	if e.Type != core.EventPut && e.Type != core.EventDelete {
		return fmt.Errorf("%w: only PUT and DELETE may be forwarded", core.ErrCorruptEvent)
	}
	if err := n.cfg.Limits.CheckEvent(e); err != nil {
		return err
	}
	a, err := n.admit(e, len(cmd))
	if err != nil {
		return err
	}
	defer a.done()
	return n.applyAdmitted(ctx, cmd, a)
}

// admit holds a PUT or a DELETE to the disk budget (storage.go) before it
// enters the log: a refused write is not in it anywhere.
func (n *Node) admit(e core.Event, size int) (*admission, error) {
	if e.Type == core.EventPut {
		return n.storage.admitPut(size)
	}
	// What the DELETE takes out of the next snapshot, as far as this node
	// knows (a lower bound of the key's snapshot bytes; 0 for a key it
	// does not hold).
	var frees int64
	if v, err := n.store.Get(e.Key); err == nil {
		frees = int64(len(e.Key) + len(v))
	}
	return n.storage.admitDelete(size, frees)
}

// apply runs cmd through raft on this node.
func (n *Node) apply(ctx context.Context, cmd []byte) error {
	return n.applyAdmitted(ctx, cmd, nil)
}

// applyAdmitted runs cmd, which the disk budget admitted as a, through
// raft on this node.
func (n *Node) applyAdmitted(ctx context.Context, cmd []byte, a *admission) error {
	if n.raft.State() != raft.Leader {
		return core.ErrNotLeader
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := n.raft.Apply(cmd, timeout)
	if err := waitFuture(ctx, f); err != nil {
		if a != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Given up on, not settled: the entry may still go into the
			// log and the store, and keeps its share of the room until
			// then.
			a.holdUntil(f)
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) {
			// Refused before it entered the log.
			return fmt.Errorf("%w: %v", core.ErrUnavailable, err)
		}
		// The log refused the batch with nothing of it written: not in
		// the log, not applied.
		if txlog.IsNoSpace(err) {
			n.storage.full.Store(true)
			n.storage.wake()
			return fmt.Errorf("%w: %v", core.ErrNoSpace, err)
		}
		return fmt.Errorf("%w: %v", core.ErrIndeterminate, err)
	}
	if rerr, ok := f.Response().(error); ok {
		return rerr
	}
	return nil
}

// ReadBarrier implements core.Replicator with a read index: the leader
// takes an index that covers every write acknowledged before the call
// (ReadIndex); a follower asks the leader for one. Then the node waits
// until its store has applied the index. A strict read, and every read
// when the lease is off, makes the leader run a quorum round.
func (n *Node) ReadBarrier(ctx context.Context, c core.Consistency) error {
	strict := c == core.Strict || !n.cfg.ReadLease
	index, err := untilLeader(ctx, n, func() (uint64, error) {
		api, _, err := n.leaderAPI()
		if err != nil {
			return 0, err
		}
		switch {
		case api == "":
			return n.ReadIndex(ctx, strict)
		case strict:
			return n.remoteStrict.confirm(ctx)
		}
		return n.remote.confirm(ctx)
	})
	if err != nil {
		return err
	}
	return n.store.WaitApplied(ctx, index)
}

// ReadIndex returns an index that covers every write acknowledged
// anywhere before the call. Only the leader answers; followers call it
// through /v1/internal/readindex. While the read lease holds it is the
// commit index; otherwise, and always when strict, a quorum round's
// (shared by every read that arrives while the round before it runs).
func (n *Node) ReadIndex(ctx context.Context, strict bool) (uint64, error) {
	if strict {
		// No lease, and no log entry: the voters' terms (confirmRound).
		return n.confirms.confirm(ctx)
	}
	if index, ok := n.leaseIndex(); ok {
		return index, nil
	}
	// The lease is renewed from a round that commits an entry.
	return n.rounds.confirm(ctx)
}

// leaseIndex returns the commit index if the read lease holds.
func (n *Node) leaseIndex() (uint64, bool) {
	if n.raft.State() != raft.Leader {
		return 0, false
	}
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() != term {
		return 0, false
	}
	// The index is read before the lease is checked: while the lease holds
	// no other member leads, so every acknowledged write is at or below it.
	index := n.raft.CommitIndex()
	if !n.lease.holds(term) {
		return 0, false
	}
	return index, true
}

// quorumRound proves that this node still led after the round started: it
// commits an empty entry, appended after the start, in the term it leads
// in. Raft counts only voters' acknowledgements towards a commit, and a
// voter acknowledges only an AppendEntries that carries the entry, sent
// after the start: no earlier answer still in flight (after a pause of
// this process, say) and no non-voter can confirm it, as they could
// confirm raft's VerifyLeader. The entry's index covers every write
// acknowledged before the start, by this leader or any earlier one, and
// no later leader can have committed anything before the start (a voter
// of its quorum would have refused the entry). The round renews the read
// lease from its start.
func (n *Node) quorumRound(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, core.ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	if err := n.awaitReady(ctx, term); err != nil {
		return 0, err
	}
	ticket := n.lease.begin()
	f := n.raft.Apply(nil, timeout(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, fmt.Errorf("%w: confirming leadership: %v", core.ErrUnavailable, err)
	}
	if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
		n.lease.renew(ticket, term)
	}
	return f.Index(), nil
}

func (n *Node) leaderReadIndex(ctx context.Context, strict bool) (uint64, error) {
	api, _, err := n.leaderAPI()
	if err != nil {
		return 0, err
	}
	if api == "" {
		return 0, core.ErrNotLeader // leadership moved here; the caller retries
	}
	return n.forwardReadIndex(ctx, api, strict)
}

// waitFuture waits for f without outliving ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	if ctx.Done() == nil {
		return f.Error()
	}
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is a point-in-time view of the node for health checks and metrics.
type Status struct {
	State        string
	Leader       string
	LeaderID     string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64
	LogBytes     int64
	LogErr       error
	// Storage is the disk budget; nil when the volume cannot be measured.
	Storage *clusterapi.StorageStatus
}

// Status reports the node's raft state.
func (n *Node) Status() Status {
	addr, id := n.raft.LeaderWithID()
	return Status{
		State:       n.raft.State().String(),
		Leader:      string(addr),
		LeaderID:    string(id),
		Term:        n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(),
		// The store's, not raft's: raft counts an entry applied once it is
		// handed to the state machine, before the store has applied it. A
		// restart that replays a long log after the snapshot would otherwise
		// be ready, and serve stale reads, while the replay still runs.
		AppliedIndex: n.store.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
		LogBytes:     n.log.Size(),
		LogErr:       n.log.Err(),
		Storage:      n.storage.status(),
	}
}

// defaultStaleLogAfter is Node.staleLogAfter: long against the moment
// between raft's deletion of a suffix and its append after it, short
// against the time a stuck follower may lag unnoticed.
const defaultStaleLogAfter = 10 * time.Second

// Live reports a state the node cannot leave by itself, so that it is
// restarted: the log failed for good (a failed write or fdatasync; a full
// volume does not fail it), raft stopped while the node runs, or raft's
// last index has stayed past the log's (logBehind). A full disk is not
// such a state: a restart would not free any space.
func (n *Node) Live() error {
	if err := n.log.Err(); err != nil {
		return fmt.Errorf("transaction log failed: %w", err)
	}
	select {
	case <-n.closed:
		return nil
	default:
	}
	if n.raft.State() == raft.Shutdown {
		return errors.New("raft has stopped")
	}
	return n.logBehind()
}

// logBehind fails once raft's last index has been past the last one its
// log and snapshots hold for staleLogAfter. Raft deletes a follower's
// conflicting suffix and then appends the leader's entries; when the
// append is refused (a full volume) it keeps the last index from before
// the deletion, and from then on every AppendEntries fails, looking for
// entries that are gone, while raft still runs. A restart reads the last
// index from the log again.
func (n *Node) logBehind() error {
	last, err := n.log.LastIndex()
	if err != nil {
		return nil // a failed log is reported as such
	}
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		last = max(last, metas[0].Index)
	}
	raftLast := n.raft.LastIndex()
	n.staleLogMu.Lock()
	defer n.staleLogMu.Unlock()
	if raftLast <= last {
		n.staleLogSince = time.Time{}
		return nil
	}
	now := time.Now()
	if n.staleLogSince.IsZero() {
		n.staleLogSince = now
	}
	if d := now.Sub(n.staleLogSince); d >= n.staleLogAfter {
		return fmt.Errorf("raft's last index %d is past the log's %d, for %s: a refused append after a deleted suffix; a restart reads the log again", raftLast, last, d.Round(time.Second))
	}
	return nil
}

// Ready reports why the node should not receive traffic, or nil: the log
// must be healthy, a leader known, and everything known to be committed
// applied.
func (n *Node) Ready() error {
	s := n.Status()
	switch {
	case s.LogErr != nil:
		return fmt.Errorf("transaction log failed: %w", s.LogErr)
	case s.Leader == "":
		return errors.New("no leader")
	case n.raft.State() == raft.Leader && n.readyTerm.Load() != n.raft.CurrentTerm():
		// Until its first entry commits, a new leader's commit index is
		// about to move past what it has applied: ready now would flap.
		return errors.New("the new leader has not committed its first entry")
	case s.AppliedIndex < s.CommitIndex:
		return n.applyLag.check(s.AppliedIndex, s.CommitIndex, time.Now())
	}
	return nil
}

// applyGrace is how long an entry may stay committed and not applied
// before the node is not ready.
const applyGrace = time.Second

// lagWatch tells a node that applies what commits, a moment later (every
// write under load: readiness sampled between commit and apply would
// flap, and the operator would count a healthy member as down), from one
// that falls behind (replaying a backlog, its applies stuck): not ready
// once an index committed applyGrace ago is still not applied.
type lagWatch struct {
	mu     sync.Mutex
	target uint64    // a commit index seen at since
	since  time.Time // when target was seen
}

func (w *lagWatch) check(applied, commit uint64, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if applied >= w.target || w.since.IsZero() {
		w.target, w.since = commit, now
		return nil
	}
	if late := now.Sub(w.since); late > applyGrace {
		return fmt.Errorf("applied index %d behind commit index %d: index %d, committed %v ago, is not applied yet", applied, commit, w.target, late.Round(time.Millisecond))
	}
	return nil
}

// Snapshot takes a snapshot now and compacts the log.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops raft (handing leadership over first when there are other
// voters), then syncs and closes the log.
func (n *Node) Shutdown() error {
	select {
	case <-n.closed:
		return nil
	default:
	}
	n.HandOver()
	close(n.closed)
	err := n.raft.Shutdown().Error()
	n.wg.Wait()
	return errors.Join(err, n.closeStorage())
}

// HandOver transfers leadership to another voter when this node leads and
// is not the only voter. A stopping node calls it before it stops serving:
// members that forward to it then find the new leader while it still
// answers, instead of failing against a closed listener.
func (n *Node) HandOver() {
	if n.raft.State() == raft.Leader && n.voters() > 1 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := n.transferToAny(ctx); err != nil {
			n.cfg.Logger.Warn("leadership transfer on shutdown failed", "error", err)
		}
	}
}

func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	v := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			v++
		}
	}
	return v
}

func (n *Node) closeStorage() error {
	var err error
	if c, ok := n.trans.(raft.WithClose); ok {
		err = c.Close()
	}
	return errors.Join(err, n.log.Close())
}
