// Package clusterapi owns the contract between a kvnode and whoever
// manages its membership (the operator, the test harness, a person with
// curl): the paths of the membership API and of the calls members make to
// each other, the JSON bodies they carry, the role names, and the
// --bootstrap modes that say whether a node may start a cluster on its own.
// The kvnode handler serves these shapes and every client speaks them;
// nobody declares them again.
//
// It imports only the standard library, so that the operator can use it
// without pulling in Raft.
package clusterapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// The membership API, for the operator. Every call needs the admin client
// certificate; calls only the leader can make are redirected to it (307).
const (
	// PathCluster: GET answers a Cluster.
	PathCluster = "/v1/cluster"
	// PathBootstrap: POST starts a new cluster with this node as its only
	// member; 409 once the node has any cluster state.
	PathBootstrap = PathCluster + "/bootstrap"
	// PathMembers: POST with an AddMemberRequest adds a non-voter.
	PathMembers = PathCluster + "/members"
	// PathMember: DELETE removes the member.
	PathMember = PathMembers + "/{id}"
	// PathPromote: POST makes a caught-up non-voter a voter (409 before).
	PathPromote = PathMember + "/promote"
	// PathDemote: POST makes a voter a non-voter.
	PathDemote = PathMember + "/demote"
	// PathLeader: POST with a TransferRequest hands leadership over and
	// answers a TransferResult: 200 when it is done, 202 when its outcome
	// is unknown (it may still take effect).
	PathLeader = PathCluster + "/leader"
	// PathSnapshot: POST takes a snapshot and compacts the log.
	PathSnapshot = PathCluster + "/snapshot"
	// PathBackup: GET streams a backup (format: package kvnode/backup) of
	// the leader's store; ?local=true of the answering node's own.
	PathBackup = PathCluster + "/backup"
	// PathRecover: POST with a RecoverRequest makes the answering member,
	// once per token, the whole cluster (it restarts to do so): for the
	// survivor of a quorum lost for good. 409 while a leader is known.
	PathRecover = PathCluster + "/recover"
)

// The calls members make to each other, on the same port and with the
// same server certificate as clients. They are not for clients, and are
// refused to them (403): a member calls with its peer certificate (on a
// node without TLS, only loopback callers are let in). They change
// whenever kvnode's replication does.
const (
	// PathInternal prefixes them all.
	PathInternal = "/v1/internal/"
	// PathStatus: GET answers this node's NodeStatus.
	PathStatus = PathInternal + "status"
	// PathReadIndex: GET on the leader answers a ReadIndexResponse; with
	// QueryStrict=true the leader makes a fresh quorum round, also while it
	// holds a read lease.
	PathReadIndex = PathInternal + "readindex"
	// PathPropose: POST on the leader applies an encoded event.
	PathPropose = PathInternal + "propose"
	// PathProposeBatch: POST on the leader applies several encoded events,
	// each on its own (EncodeBatch), and answers a ProposeBatchResponse.
	PathProposeBatch = PathInternal + "propose-batch"
	// PathTerm: GET answers a TermResponse, the answering member's current
	// Raft term: the leader's confirmation round for strict reads.
	PathTerm = PathInternal + "term"
)

// Bounds of a POST PathProposeBatch: at most MaxBatchEvents events, each
// at most MaxBatchEventBytes, in a body of at most MaxBatchBytes. They are
// constants, not derived from the nodes' limits, so that a follower and a
// leader agree on them while a change of limits rolls out; larger events
// go one at a time through PathPropose.
const (
	MaxBatchEvents     = 512
	MaxBatchEventBytes = 64 << 10
	MaxBatchBytes      = 4 << 20
)

// ProposeBatchResponse answers POST PathProposeBatch: one result per event,
// in the request's order.
type ProposeBatchResponse struct {
	Results []ProposeResult `json:"results"`
}

// ProposeResult is the outcome of one event of a batch, as POST PathPropose
// would have answered it: Status 204 when applied; otherwise the status,
// Unknown when the event may have been applied all the same (the header
// keyapi.HeaderOutcome of a single proposal), and the reason.
type ProposeResult struct {
	Status  int    `json:"status"`
	Unknown bool   `json:"unknown,omitempty"`
	Error   string `json:"error,omitempty"`
}

// EncodeBatch frames events for POST PathProposeBatch: each is its length
// as a uvarint, then its bytes.
func EncodeBatch(events [][]byte) []byte {
	n := 0
	for _, e := range events {
		n += binary.MaxVarintLen64 + len(e)
	}
	b := make([]byte, 0, n)
	for _, e := range events {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

// DecodeBatch splits a body made by EncodeBatch, held to the bounds above.
// Each event is a copy: a value the store keeps must not hold the whole
// body in memory.
func DecodeBatch(body []byte) ([][]byte, error) {
	var events [][]byte
	for off := 0; off < len(body); {
		size, n := binary.Uvarint(body[off:])
		switch {
		case n <= 0:
			return nil, fmt.Errorf("event %d at byte %d: bad length", len(events), off)
		case size > MaxBatchEventBytes:
			return nil, fmt.Errorf("event %d at byte %d: %d bytes, over %d", len(events), off, size, MaxBatchEventBytes)
		case size > uint64(len(body)-off-n):
			return nil, fmt.Errorf("event %d at byte %d: %d bytes, past the end of the body", len(events), off, size)
		case len(events) == MaxBatchEvents:
			return nil, fmt.Errorf("more than %d events", MaxBatchEvents)
		}
		off += n
		events = append(events, bytes.Clone(body[off:off+int(size)]))
		off += int(size)
	}
	return events, nil
}

// TermResponse is the answer of GET PathTerm: who answers (the leader
// counts an answer only from the member it asked), and the highest term
// it has been in or voted in. A member on a new volume, which may have
// voted on the one it lost, answers 503 instead.
type TermResponse struct {
	ID        string `json:"id"`
	ClusterID string `json:"clusterID"`
	Term      uint64 `json:"term"`
}

// QueryStrict is the query parameter of PathReadIndex that asks for a
// quorum round.
const QueryStrict = "strict"

// MemberPath fills the member ID into PathMember, PathPromote or PathDemote.
func MemberPath(path, id string) string { return strings.Replace(path, "{id}", id, 1) }

// Roles of a member.
const (
	RoleVoter    = "voter"
	RoleNonVoter = "non-voter"
)

// Cluster is the answer of GET /v1/cluster: the configuration the answering
// member knows, with each member's own report.
type Cluster struct {
	// ClusterID is the ID of the cluster whose log this node holds, also
	// while it has no leader and has not applied that log yet; "" on a
	// node that never joined a cluster, or before the first leader named it.
	ClusterID string `json:"clusterID"`
	// HasState: the node holds Raft state (a log, a snapshot, a vote) or
	// hears from a leader, so it belongs to a cluster and refuses a
	// bootstrap. The operator bootstraps only when no pod says so.
	HasState    bool   `json:"hasState"`
	Leader      string `json:"leader"` // the leader's ID; "" when none is known
	CommitIndex uint64 `json:"commitIndex"`
	// ConfigurationIndex is the log index of the configuration in
	// Members. Raft reports its latest configuration, committed or not:
	// it is committed when ConfigurationIndex <= CommitIndex.
	ConfigurationIndex uint64 `json:"configurationIndex"`
	// LeaderVerified: the node answering is the leader and a quorum
	// confirmed that just before it answered. A deposed leader that has
	// not noticed yet cannot say so.
	LeaderVerified bool `json:"leaderVerified"`
	// Incarnation and Admitted are the answering node's own, as in
	// NodeStatus.
	Incarnation string `json:"incarnation"`
	Admitted    bool   `json:"admitted"`
	// LastIndex and Term are the answering node's last log index and
	// current term: after a quorum loss, the survivor with the highest
	// holds the most.
	LastIndex uint64   `json:"lastIndex"`
	Term      uint64   `json:"term"`
	Members   []Member `json:"members"` // sorted by ID
	// Version and LogFormat are the answering node's, as in NodeStatus.
	Version   string `json:"version,omitempty"`
	LogFormat int    `json:"logFormat,omitempty"`
}

// Authoritative reports whether c is a configuration the operator may act
// on: from a leader that a quorum just confirmed, and committed. Anything
// else may be undone (an uncommitted removal lost with its leader) or be
// stale (a deposed leader's).
func (c Cluster) Authoritative() bool {
	return c.LeaderVerified && c.ConfigurationIndex <= c.CommitIndex
}

// Voters returns the IDs of the voting members.
func (c Cluster) Voters() []string {
	var v []string
	for _, m := range c.Members {
		if m.Role == RoleVoter {
			v = append(v, m.ID)
		}
	}
	return v
}

// Member is one server of the configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`       // Raft peer address
	API     string `json:"api,omitempty"` // API URL, once known
	Role    string `json:"role"`          // RoleVoter or RoleNonVoter
	Leader  bool   `json:"leader"`
	// Healthy: the member answered and is ready.
	Healthy bool `json:"healthy"`
	// Error says why the member's status is missing.
	Error  string      `json:"error,omitempty"`
	Status *NodeStatus `json:"status,omitempty"`
}

// NodeStatus is what a node says about itself (GET PathStatus).
type NodeStatus struct {
	ID string `json:"id"`
	// Version is the kvnode build (its module version, or the commit it
	// was built from); "" from a kvnode that predates it.
	Version string `json:"version,omitempty"`
	// LogFormat is the newest transaction-log format this kvnode reads
	// and writes; 0 from a kvnode that predates it.
	LogFormat int `json:"logFormat,omitempty"`
	// GRPC is the address clients reach the node's gRPC API at; "" when
	// it serves none, or predates it.
	GRPC         string    `json:"grpc,omitempty"`
	State        string    `json:"state"`
	Term         uint64    `json:"term"`
	LeaderID     string    `json:"leaderID"`
	AppliedIndex uint64    `json:"appliedIndex"`
	CommitIndex  uint64    `json:"commitIndex"`
	LastIndex    uint64    `json:"lastIndex"`
	LastContact  time.Time `json:"lastContact,omitzero"`
	Ready        bool      `json:"ready"`
	ClusterID    string    `json:"clusterID"`
	// Incarnation identifies the node's volume: a random ID written when
	// the node first started on it. A new ID under the same node ID means
	// the volume was replaced and everything on the old one is gone.
	Incarnation string `json:"incarnation"`
	// Admitted: the node may vote. A node on a new volume is admitted when
	// it bootstraps a cluster or when the leader promotes it; until then
	// it refuses to vote and does not stand for election. A voter that
	// reports false lost its volume: the operator removes it and adds it
	// again as a non-voter.
	Admitted bool `json:"admitted"`
	// Storage is the node's disk budget; nil from a kvnode that predates
	// it.
	Storage *StorageStatus `json:"storage,omitempty"`
}

// StorageStatus is a node's disk budget: the node keeps ReserveBytes free
// for a snapshot of its data, the log until that snapshot, and Raft's own
// small writes, and refuses PUTs (507) while it cannot (Full). Reads and
// DELETEs are still served. It takes PUTs again by itself once space is
// freed (DELETEs, a compaction) or the volume grows.
type StorageStatus struct {
	Full          bool   `json:"full"`
	FreeBytes     uint64 `json:"freeBytes"`
	CapacityBytes uint64 `json:"capacityBytes"`
	ReserveBytes  uint64 `json:"reserveBytes"`
}

// AddMemberRequest is the body of POST PathMembers. ID and Address are
// required; API lets followers forward to the member once it leads.
type AddMemberRequest struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	API     string `json:"api"`
}

// RecoverRequest is the body of POST PathRecover.
type RecoverRequest struct {
	Token string `json:"token"`
}

// TransferRequest is the body of POST PathLeader; an empty ID (or no body)
// lets the leader pick any other voter.
type TransferRequest struct {
	ID string `json:"id,omitempty"`
}

// Result is the answer of a successful change: what was done, and to
// which member.
type Result struct {
	ID     string `json:"id,omitempty"`
	Leader string `json:"leader,omitempty"`
	Result string `json:"result"`
}

// TransferResult is the answer of POST PathLeader.
type TransferResult struct {
	// Outcome is TransferDone (status 200) or TransferUnknown (202).
	Outcome string `json:"outcome"`
	// Leader is the member that leads now, once known (TransferDone).
	Leader  string `json:"leader,omitempty"`
	Message string `json:"message,omitempty"`
}

// Outcomes of a leadership transfer. A transfer that certainly did not
// happen is an error (not the leader, no such voter, refused by the
// target, another transfer running).
const (
	// TransferDone: the node that was asked no longer leads.
	TransferDone = "done"
	// TransferUnknown: the transfer did not complete in time, but its
	// target may have been told to stand for election and may still do
	// so, at any later time (it may be paused, or the message delayed).
	// Observe the leader before acting on either outcome.
	TransferUnknown = "unknown"
)

// ReadIndexResponse is the answer of GET PathReadIndex: an index that
// covers every write acknowledged before the leader received the request.
type ReadIndexResponse struct {
	Index uint64 `json:"index"`
	// Strict: the index comes from a quorum round the leader started after
	// the request arrived (QueryStrict), not from its read lease.
	Strict bool `json:"strict,omitempty"`
}

// Modes of kvnode's --bootstrap flag (KV_BOOTSTRAP): when a node whose data
// directory holds no Raft state starts a new one-member cluster by itself.
// A node with Raft state never does, whatever the mode, and
// POST PathBootstrap works in every mode.
const (
	// BootstrapAuto bootstraps a standalone node: one given none of the
	// flags through which other members reach it or authenticate it
	// (--peer-listen, --peer-advertise, --api-advertise, --peer-tls-*).
	BootstrapAuto = "auto"
	// BootstrapAlways bootstraps even a node given those flags (the first
	// member of a cluster set up by hand).
	BootstrapAlways = "always"
	// BootstrapNever waits to be added by a cluster's leader (or
	// bootstrapped through the API): what a member that may have lost its
	// volume must do, so that it can never start a second cluster.
	BootstrapNever = "never"
)
