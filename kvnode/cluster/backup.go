package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// metaRestoredFrom names the backup a cluster was restored from.
const metaRestoredFrom = "restored-from"

// OpenBackup returns a consistent copy of the store as of a committed
// index: this node takes a Raft snapshot (or, with nothing new since the
// last one, opens that) and streams it. The snapshot is the one raft
// keeps on disk, so a backup holds up no write: the store was frozen on
// raft's FSM goroutine and is written out while writes continue. The
// caller closes the reader.
//
// With complete set (the leader's backup), a strict read barrier comes
// first: the backup's index must reach an index that covers every write
// acknowledged before the call, or it fails. Without it (a survivor's own
// copy, when no leader can be elected), the backup holds what this node
// has applied, which after a restart without a leader is only its last
// snapshot: log entries after it stay on its volume, not in the backup.
func (n *Node) OpenBackup(ctx context.Context, complete bool) (backup.Header, io.ReadCloser, error) {
	var barrier uint64
	if complete {
		if err := n.ReadBarrier(ctx, core.Strict); err != nil {
			return backup.Header{}, nil, err
		}
		barrier = n.store.AppliedIndex()
	}
	var (
		meta *raft.SnapshotMeta
		rc   io.ReadCloser
	)
	f := n.raft.Snapshot()
	err := f.Error()
	switch {
	case err == nil:
		meta, rc, err = f.Open()
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		meta, rc, err = n.latestSnapshot()
	}
	if err != nil {
		return backup.Header{}, nil, fmt.Errorf("cluster: a snapshot for the backup: %w", err)
	}
	if meta.Index < barrier {
		_ = rc.Close()
		return backup.Header{}, nil, fmt.Errorf("%w: the snapshot's index %d is behind the writes acknowledged before the backup (index %d); try again", core.ErrUnavailable, meta.Index, barrier)
	}
	br := bufio.NewReaderSize(rc, 256<<10)
	_, keys, err := core.SnapshotHeader(br)
	if err != nil {
		_ = rc.Close()
		return backup.Header{}, nil, err
	}
	hdr := backup.Header{
		ClusterID: n.clusterID(), Index: meta.Index, Term: meta.Term, Keys: keys,
		SnapshotBytes: meta.Size, CreatedAt: time.Now().UTC(),
	}
	return hdr, struct {
		io.Reader
		io.Closer
	}{br, rc}, nil
}

func (n *Node) latestSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	list, err := n.snaps.List()
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return nil, nil, errors.New("the node has no snapshot and nothing to snapshot yet")
	}
	return n.snaps.Open(list[0].ID)
}

// A restore starts a new cluster whose first member holds a backup's data.
//
// The node must start on an empty volume with --restore-from. It checks
// the whole backup (checksum, format, length) before it writes anything,
// records which backup it restores (restoredFile), then reads the backup
// again into a store, checking it once more, gives the store a new cluster
// ID, names the backup in its metadata (metaRestoredFrom), drops the old
// members' addresses and admissions, and writes it as a Raft snapshot
// whose configuration is this node alone, at the backup's index and term.
// raft then starts from that snapshot as from any other, and elects this
// node; the others join as new members.
//
// A crash before the snapshot is written leaves no Raft state, and the
// next start restores again. A node restarted later with the same flag
// finds Raft state and the record of this backup, and starts as usual;
// with any other backup, or with state it did not restore, it refuses: a
// restore never overwrites data.
const restoredFile = "restored-from"

type restoreRecord struct {
	ClusterID string    `json:"clusterID"`
	Index     uint64    `json:"index"`
	Term      uint64    `json:"term"`
	Keys      uint64    `json:"keys,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	SHA256    string    `json:"sha256"`
}

func (r restoreRecord) same(h backup.Header) bool {
	return r.ClusterID == h.ClusterID && r.Index == h.Index && r.Term == h.Term && r.CreatedAt.Equal(h.CreatedAt)
}

// restore runs before raft starts. hasState says whether the data
// directory holds Raft state. It returns what was restored, and whether
// that had been done before.
func (n *Node) restore(path string, hasState bool) (restoreRecord, bool, error) {
	record := filepath.Join(n.cfg.DataDir, restoredFile)
	if hasState {
		rec, done, err := n.alreadyRestored(path, record)
		if err != nil || done {
			return rec, done, err
		}
		// The record is there but the snapshot is not: a crash in the
		// middle of this restore, before the snapshot was complete.
	}
	f, err := os.Open(path)
	if err != nil {
		return restoreRecord{}, false, fmt.Errorf("restore: %w", err)
	}
	hdr, sum, err := backup.Verify(bufio.NewReaderSize(f, 1<<20))
	_ = f.Close()
	if err != nil {
		return restoreRecord{}, false, fmt.Errorf("restore from %s: %w", path, err)
	}
	rec := restoreRecord{ClusterID: hdr.ClusterID, Index: hdr.Index, Term: hdr.Term, Keys: hdr.Keys, CreatedAt: hdr.CreatedAt, SHA256: sum}
	b, _ := json.Marshal(rec)
	if err := writeFileSync(record, b); err != nil {
		return rec, false, fmt.Errorf("restore: %w", err)
	}
	return rec, false, n.restoreSnapshot(path, hdr, sum)
}

// restoreSnapshot writes the backup at path, already checked, as this
// node's Raft snapshot.
func (n *Node) restoreSnapshot(path string, hdr backup.Header, sum string) error {
	st, err := readBackup(path)
	if err != nil {
		return err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	for _, k := range st.MetaKeys() {
		if strings.HasPrefix(k, metaAPIKey("")) || strings.HasPrefix(k, metaAdmitKey("")) {
			st.Apply(0, core.Event{Type: core.EventMeta, Key: k})
		}
	}
	st.Apply(0, core.Event{Type: core.EventMeta, Key: metaClusterID, Value: []byte(hex.EncodeToString(id))})
	from := fmt.Sprintf("cluster %s at index %d (sha256 %s)", hdr.ClusterID, hdr.Index, sum)
	st.Apply(0, core.Event{Type: core.EventMeta, Key: metaRestoredFrom, Value: []byte(from)})

	// raft's current term starts at the backup's, so that the first
	// election is in a later term than any entry the snapshot covers. It
	// is written before the snapshot: raft must never start from the
	// snapshot with a lower term (a member with only the snapshot would
	// then look more up to date than one with later entries).
	if err := n.log.SetUint64([]byte(keyCurrentTerm), hdr.Term); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	self := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeID), Address: n.trans.LocalAddr()}}}
	sink, err := n.snaps.Create(raft.SnapshotVersionMax, hdr.Index, hdr.Term, self, hdr.Index, n.trans)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := st.Snapshot().WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("restore: write the snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("restore: write the snapshot: %w", err)
	}
	n.cfg.Logger.Info("restored a backup", "from", from, "keys", hdr.Keys, "index", hdr.Index)
	return nil
}

// readBackup reads a backup into a new store, and checks it again.
func readBackup(path string) (*core.Store, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer func() { _ = f.Close() }()
	b, err := backup.Open(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("restore from %s: %w", path, err)
	}
	st := core.NewStore()
	if err := st.Restore(b.Snapshot()); err != nil {
		return nil, fmt.Errorf("restore from %s: %w: %v", path, backup.ErrCorrupt, err)
	}
	if _, err := b.Check(); err != nil {
		return nil, fmt.Errorf("restore from %s: %w", path, err)
	}
	return st, nil
}

// alreadyRestored accepts Raft state on a node given --restore-from only
// when it is the state that backup started: done when the restore is
// complete, not done when it was cut short before its snapshot was.
func (n *Node) alreadyRestored(path, record string) (restoreRecord, bool, error) {
	return n.restoredState(path, record, func() (backup.Header, error) {
		f, err := os.Open(path)
		if err != nil {
			return backup.Header{}, err
		}
		defer func() { _ = f.Close() }()
		r, err := backup.Open(f)
		if err != nil {
			return backup.Header{}, fmt.Errorf("restore from %s: %w", path, err)
		}
		return r.Header(), nil
	})
}

// restoredState is alreadyRestored with the backup's header from header,
// which fails with an *fs.PathError when the backup cannot be read.
func (n *Node) restoredState(path, record string, header func() (backup.Header, error)) (restoreRecord, bool, error) {
	refuse := fmt.Errorf("restore from %s: the data directory %s already holds Raft state; a restore needs an empty volume and never overwrites data", path, n.cfg.DataDir)
	var rec restoreRecord
	b, err := os.ReadFile(record)
	if err != nil {
		return rec, false, refuse
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, refuse
	}
	snaps, err := n.snaps.List()
	if err != nil {
		return rec, false, err
	}
	hdr, err := header()
	var unreadable *fs.PathError
	switch {
	case errors.As(err, &unreadable) && len(snaps) > 0:
		// The restore is complete; the file may have been removed since.
		n.cfg.Logger.Warn("the backup named by --restore-from cannot be read; this node was restored from it before and starts with what it holds", "path", path, "error", err)
	case errors.As(err, &unreadable):
		return rec, false, fmt.Errorf("restore: %w", err)
	case err != nil:
		return rec, false, err
	case !rec.same(hdr):
		return rec, false, fmt.Errorf("restore from %s: the data directory %s was restored from another backup (cluster %s at index %d); a restore never overwrites data", path, n.cfg.DataDir, rec.ClusterID, rec.Index)
	}
	if len(snaps) == 0 {
		return rec, false, nil
	}
	// Whatever happened since, the term never goes below the backup's.
	if term, err := n.log.GetUint64([]byte(keyCurrentTerm)); err == nil && term < rec.Term {
		if err := n.log.SetUint64([]byte(keyCurrentTerm), rec.Term); err != nil {
			return rec, false, err
		}
	}
	return rec, true, nil
}

// Restored is what an offline restore restored.
type Restored struct {
	// Backup is the backup's header, less its snapshot's length.
	Backup backup.Header
	SHA256 string
	// Already: the data directory held this restore, complete, before;
	// nothing was written.
	Already bool
}

func (r restoreRecord) restored(already bool) Restored {
	return Restored{
		Backup: backup.Header{FormatVersion: backup.FormatVersion, ClusterID: r.ClusterID, Index: r.Index, Term: r.Term, Keys: r.Keys, CreatedAt: r.CreatedAt},
		SHA256: r.SHA256, Already: already,
	}
}

// Restore makes, offline, the restore a node started with
// cfg.RestoreFrom makes before raft starts (see restore), and returns
// without starting raft: `kvnode restore`, a Job that prepares a volume
// before the pod that will serve it starts. The node that then starts on
// cfg.DataDir needs no RestoreFrom; it must have the same NodeID and
// PeerAdvertise, which the restored configuration records. Restore
// refuses what such a node would refuse, and is done (Already) when it
// holds this restore. Only NodeID, DataDir, PeerAdvertise, RestoreFrom and
// Logger are read.
func Restore(cfg Config) (Restored, error) {
	n, hasState, err := openOffline(cfg)
	if err != nil {
		return Restored{}, err
	}
	// As in Open: the incarnation is on disk before any Raft state.
	_, err = openVolume(cfg.DataDir, hasState, true)
	var (
		rec  restoreRecord
		done bool
	)
	if err == nil {
		rec, done, err = n.restore(cfg.RestoreFrom, hasState)
	}
	if cerr := n.closeStorage(); err == nil {
		err = cerr
	}
	return rec.restored(done), err
}

// CheckRestore tells from a backup's header alone what Restore of that
// backup into cfg.DataDir would do: nothing (Already: the directory
// holds this restore, complete), a restore (no Raft state, or this
// restore cut short), or refuse (an error). It writes nothing, so that
// `kvnode restore` can ask before it fetches a large backup onto a volume
// that will not take it.
func CheckRestore(cfg Config, hdr backup.Header) (Restored, error) {
	n, hasState, err := openOffline(cfg)
	if err != nil {
		return Restored{}, err
	}
	var (
		rec  restoreRecord
		done bool
	)
	if hasState {
		rec, done, err = n.restoredState(cfg.RestoreFrom, filepath.Join(cfg.DataDir, restoredFile), func() (backup.Header, error) { return hdr, nil })
	}
	if cerr := n.closeStorage(); err == nil {
		err = cerr
	}
	return rec.restored(done), err
}

// openOffline opens a data directory's Raft storage for an offline
// restore: no listener, and a transport that only names this node's
// advertised peer address.
func openOffline(cfg Config) (*Node, bool, error) {
	if cfg.NodeID == "" {
		return nil, false, errors.New("cluster: a node ID is required")
	}
	if _, _, err := net.SplitHostPort(cfg.PeerAdvertise); err != nil {
		return nil, false, fmt.Errorf("cluster: the advertised peer address %q is not host:port: %w", cfg.PeerAdvertise, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, false, err
	}
	log, err := txlog.Open(filepath.Join(cfg.DataDir, "log"), txlog.Options{})
	if err != nil {
		return nil, false, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, cfg.Logger.Named("snapshots"))
	if err != nil {
		_ = log.Close()
		return nil, false, err
	}
	hasState, err := raft.HasExistingState(log, log, snaps)
	if err != nil {
		_ = log.Close()
		return nil, false, err
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.PeerAdvertise))
	return &Node{cfg: cfg, log: log, snaps: snaps, trans: trans}, hasState, nil
}
