package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

// Membership errors, mapped to HTTP statuses by the admin API.
var (
	// ErrAlreadyBootstrapped: the node has Raft state; a second bootstrap
	// would start a second cluster (split brain).
	ErrAlreadyBootstrapped = errors.New("this node already has cluster state; bootstrap happens once per cluster")
	// ErrNoSuchMember: the member is not in the configuration.
	ErrNoSuchMember = errors.New("no such member")
	// ErrNotCaughtUp: the non-voter trails the leader too far to vote.
	ErrNotCaughtUp = errors.New("member has not caught up with the leader")
)

// bootstrap starts a one-member cluster. The cluster ID and this node's
// API address are written by the first leader (recordMetadata).
func (n *Node) bootstrap() error {
	boot := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(n.cfg.NodeID), Address: n.trans.LocalAddr()}}}
	if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return ErrAlreadyBootstrapped
		}
		return fmt.Errorf("cluster: bootstrap: %w", err)
	}
	return nil
}

// Bootstrap starts a new cluster with this node as its only member. It is
// refused when the node has any Raft state, so a node that lost its volume
// can only be re-added, never start a second cluster.
func (n *Node) Bootstrap() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	has, err := n.hasState()
	if err != nil {
		return err
	}
	if has {
		return ErrAlreadyBootstrapped
	}
	// The first member of a new cluster votes from the start. Admission is
	// recorded first: a node that crashed after it but before the bootstrap
	// is empty, admitted, and in no configuration, and is bootstrapped again.
	if err := n.vol.admit(0); err != nil {
		return err
	}
	if err := n.bootstrap(); err != nil {
		// A leader's entries may have arrived since hasState looked: this
		// node belongs to a cluster after all, on a volume not admitted.
		return errors.Join(err, n.vol.unadmit())
	}
	return nil
}

// hasState reports whether the node belongs to a cluster: it holds Raft
// state, or hears from a leader (a node that lost its volume but is still
// a member hears from the leader within a heartbeat).
func (n *Node) hasState() (bool, error) {
	has, err := raft.HasExistingState(n.log, n.log, n.snaps)
	if err != nil {
		return false, err
	}
	if has || n.raft.LastIndex() > 0 {
		return true, nil
	}
	addr, _ := n.raft.LeaderWithID()
	return addr != "", nil
}

// recordMetadata runs on a new leader: it gives a new cluster its ID and
// makes sure its own API address is known, so followers can forward.
func (n *Node) recordMetadata() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var events []core.Event
	if n.store.Meta(metaClusterID) == "" {
		b := make([]byte, 16)
		rand.Read(b)
		events = append(events, core.Event{Type: core.EventMeta, Key: metaClusterID, Value: []byte(hex.EncodeToString(b))})
	}
	if n.cfg.APIAdvertise != "" && n.store.Meta(metaAPIKey(n.cfg.NodeID)) != n.cfg.APIAdvertise {
		events = append(events, core.Event{Type: core.EventMeta, Key: metaAPIKey(n.cfg.NodeID), Value: []byte(n.cfg.APIAdvertise)})
	}
	for _, e := range events {
		cmd, _ := e.MarshalBinary()
		if err := n.apply(ctx, cmd); err != nil {
			n.cfg.Logger.Warn("recording cluster metadata failed", "key", e.Key, "error", err)
			return
		}
	}
}

// LocalStatus reports this node's own view.
func (n *Node) LocalStatus() clusterapi.NodeStatus {
	s := n.Status()
	self := clusterapi.NodeStatus{
		ID: n.cfg.NodeID, State: s.State, Term: s.Term, LeaderID: s.LeaderID,
		AppliedIndex: n.store.AppliedIndex(), CommitIndex: s.CommitIndex, LastIndex: s.LastIndex,
		Ready: n.Ready() == nil, ClusterID: n.clusterID(), Storage: s.Storage,
		Version: Version(), LogFormat: txlog.FormatVersion, GRPC: n.cfg.GRPCAdvertise,
	}
	inc := n.vol.get()
	self.Incarnation, self.Admitted = inc.ID, inc.Admitted
	if s.State == raft.Leader.String() {
		self.LastContact = time.Now()
	} else if lc := n.raft.LastContact(); !lc.IsZero() {
		self.LastContact = lc
	}
	return self
}

// Info returns the configuration this node knows, each member's own
// report fetched from its API in parallel (a member that does not answer
// within a second is unhealthy).
func (n *Node) Info(ctx context.Context) (clusterapi.Cluster, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return clusterapi.Cluster{}, err
	}
	has, err := n.hasState()
	if err != nil {
		return clusterapi.Cluster{}, err
	}
	_, leader := n.raft.LeaderWithID()
	// Leadership is confirmed before the commit index is read, and both
	// after the configuration: a configuration index at or below that
	// commit index is committed, by a leader that still led after it. The
	// confirmation is a quorum round (quorumRound), which only voters'
	// answers to entries sent after it started can complete: raft's
	// VerifyLeader also counts non-voters, and answers still in flight.
	verified := false
	if n.raft.State() == raft.Leader {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.rounds.confirm(rctx)
		cancel()
		verified = err == nil
	}
	info := clusterapi.Cluster{
		ClusterID: n.clusterID(), HasState: has, Leader: string(leader), CommitIndex: n.raft.CommitIndex(),
		ConfigurationIndex: f.Index(), LeaderVerified: verified,
		Version: Version(), LogFormat: txlog.FormatVersion,
	}
	inc := n.vol.get()
	info.Incarnation, info.Admitted = inc.ID, inc.Admitted
	info.LastIndex, info.Term = n.raft.LastIndex(), n.raft.CurrentTerm()
	servers := f.Configuration().Servers
	info.Members = make([]clusterapi.Member, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		m := clusterapi.Member{ID: string(s.ID), Address: string(s.Address), API: n.store.Meta(metaAPIKey(string(s.ID))), Role: role(s.Suffrage), Leader: s.ID == leader}
		info.Members[i] = m
		wg.Add(1)
		go func(m *clusterapi.Member) {
			defer wg.Done()
			self, err := n.memberStatus(ctx, m.ID, m.API)
			if err != nil {
				m.Error = err.Error()
				return
			}
			m.Status, m.Healthy = &self, self.Ready
		}(&info.Members[i])
	}
	wg.Wait()
	sort.Slice(info.Members, func(i, j int) bool { return info.Members[i].ID < info.Members[j].ID })
	return info, nil
}

// clusterID is the ID of the cluster whose log this node holds. The store
// knows it once the entry that names it is applied, which needs a leader:
// a member restarted without one has restored only its last snapshot.
// Then the ID is read from the entry in the log itself, so that a member
// of a cluster that lost its quorum still says which cluster it belongs
// to. Such an entry may not have committed yet; the first leader's entry
// is the one every member holds, and a later one is written only by a
// leader that has applied no ID, so a node names another cluster's ID
// only until it catches up with its leader.
func (n *Node) clusterID() string {
	if id := n.store.Meta(metaClusterID); id != "" {
		return id
	}
	n.logScan.Lock()
	defer n.logScan.Unlock()
	if n.loggedID != "" {
		return n.loggedID
	}
	first, err := n.log.FirstIndex()
	if err != nil {
		return ""
	}
	last, err := n.log.LastIndex()
	if err != nil {
		return ""
	}
	// Entries up to scanned were looked at before; the log only grows at
	// its end or loses entries at its start (compaction, after a snapshot
	// the store was restored from).
	for i := max(first, n.scanned+1); i <= last && i > 0; i++ {
		var l raft.Log
		if err := n.log.GetLog(i, &l); err != nil {
			continue // compacted meanwhile
		}
		n.scanned = i
		if l.Type != raft.LogCommand {
			continue
		}
		if e, err := core.UnmarshalEvent(l.Data); err == nil && e.Type == core.EventMeta && e.Key == metaClusterID {
			n.loggedID = string(e.Value)
			return n.loggedID
		}
	}
	return ""
}

func (n *Node) memberStatus(ctx context.Context, id, api string) (clusterapi.NodeStatus, error) {
	if id == n.cfg.NodeID {
		return n.LocalStatus(), nil
	}
	var self clusterapi.NodeStatus
	if api == "" {
		return self, errors.New("API address unknown")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+clusterapi.PathStatus, nil)
	if err != nil {
		return self, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return self, err
	}
	defer resp.Body.Close()
	defer drainBody(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return self, fmt.Errorf("status %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&self)
	return self, err
}

func role(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return clusterapi.RoleVoter
	}
	return clusterapi.RoleNonVoter
}

func (n *Node) server(id string) (raft.Server, bool, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, false, 0, err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return s, true, f.Index(), nil
		}
	}
	return raft.Server{}, false, f.Index(), nil
}

// leaderOnly fails with ErrNotLeader when this node does not lead; the
// admin API then redirects the caller to the leader.
func (n *Node) leaderOnly() error {
	if n.raft.State() != raft.Leader {
		return core.ErrNotLeader
	}
	return nil
}

// member returns the configuration entry of id for a change only the
// leader makes: ErrNotLeader on another node, ErrNoSuchMember when absent.
func (n *Node) member(id string) (raft.Server, uint64, error) {
	if err := n.leaderOnly(); err != nil {
		return raft.Server{}, 0, err
	}
	s, ok, index, err := n.server(id)
	if err == nil && !ok {
		err = ErrNoSuchMember
	}
	return s, index, err
}

// AddNonvoter adds a member that replicates but does not vote. Adding a
// member that is already there with the same address changes nothing; with
// another address, it updates the address.
func (n *Node) AddNonvoter(ctx context.Context, id, address, api string) error {
	if err := n.leaderOnly(); err != nil {
		return err
	}
	if id == "" || address == "" {
		return errors.New("id and address are required")
	}
	if api != "" && n.store.Meta(metaAPIKey(id)) != api {
		cmd, _ := core.Event{Type: core.EventMeta, Key: metaAPIKey(id), Value: []byte(api)}.MarshalBinary()
		if err := n.apply(ctx, cmd); err != nil {
			return err
		}
	}
	s, ok, index, err := n.server(id)
	if err != nil {
		return err
	}
	if ok && string(s.Address) == address {
		return nil
	}
	// A member that exists gets the new address and keeps its role (raft's
	// AddNonvoter does not demote a voter): a member recorded under an IP
	// that its pod no longer has is reachable again once it has its name.
	return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(address), index, timeout(ctx)).Error()
}

// Promote makes a non-voter a voter once it has caught up with the
// leader's commit index (within Config.CatchUpLag entries). A member on a
// new volume is admitted first; a voter on a new volume (one that lost its
// volume and could not be removed safely) is admitted where it is, under
// the same condition.
func (n *Node) Promote(ctx context.Context, id string) error {
	s, index, err := n.member(id)
	if err != nil {
		return err
	}
	self, err := n.memberStatus(ctx, id, n.store.Meta(metaAPIKey(id)))
	if err != nil {
		return fmt.Errorf("%w: its status is unavailable: %v", ErrNotCaughtUp, err)
	}
	if s.Suffrage == raft.Voter && (self.Incarnation == "" || self.Admitted) {
		return nil
	}
	if commit := n.raft.CommitIndex(); self.AppliedIndex+n.cfg.CatchUpLag < commit {
		return fmt.Errorf("%w: applied %d, leader committed %d", ErrNotCaughtUp, self.AppliedIndex, commit)
	}
	if self.Incarnation != "" && !self.Admitted {
		// The member's volume is new: it votes once it has applied this
		// entry, so once it holds everything committed before it.
		cmd, _ := core.Event{Type: core.EventMeta, Key: metaAdmitKey(id), Value: []byte(self.Incarnation)}.MarshalBinary()
		if err := n.apply(ctx, cmd); err != nil {
			return err
		}
		// It votes only once it has applied the entry: a voter that still
		// reports itself pending looks like one that lost its volume.
		if err := n.waitAdmitted(ctx, id); err != nil {
			return err
		}
	}
	if s.Suffrage == raft.Voter {
		return nil
	}
	return n.raft.AddVoter(s.ID, s.Address, index, timeout(ctx)).Error()
}

// waitAdmitted waits until member id reports that it is admitted.
func (n *Node) waitAdmitted(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		self, err := n.memberStatus(ctx, id, n.store.Meta(metaAPIKey(id)))
		if err == nil && self.Admitted {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: it has not applied its admission yet", ErrNotCaughtUp)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Demote makes a voter a non-voter; demoting a non-voter changes nothing.
func (n *Node) Demote(ctx context.Context, id string) error {
	s, index, err := n.member(id)
	if err != nil {
		return err
	}
	if s.Suffrage != raft.Voter {
		return nil
	}
	return n.raft.DemoteVoter(s.ID, index, timeout(ctx)).Error()
}

// Remove takes a member out of the cluster; removing an absent member
// changes nothing. Removing the leader itself hands leadership over first.
func (n *Node) Remove(ctx context.Context, id string) error {
	if err := n.leaderOnly(); err != nil {
		return err
	}
	_, ok, index, err := n.server(id)
	if err != nil {
		return err
	}
	if ok {
		if id == n.cfg.NodeID {
			if err := n.transferToAny(ctx); err != nil {
				return fmt.Errorf("hand over leadership before leaving: %w", err)
			}
			return core.ErrNotLeader // the caller retries on the new leader
		}
		if err := n.raft.RemoveServer(raft.ServerID(id), index, timeout(ctx)).Error(); err != nil {
			return err
		}
	}
	if n.store.Meta(metaAPIKey(id)) != "" {
		cmd, _ := core.Event{Type: core.EventMeta, Key: metaAPIKey(id)}.MarshalBinary()
		return n.apply(ctx, cmd)
	}
	return nil
}

// TransferLeadership hands leadership to the voter id, or to any voter
// when id is empty. If id already leads, nothing changes. nil means this
// node no longer leads; ErrTransferOutcomeUnknown that the transfer may
// still take effect (see transfer).
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if _, leader := n.raft.LeaderWithID(); id != "" && string(leader) == id {
		return nil
	}
	if err := n.leaderOnly(); err != nil {
		return err
	}
	if id == "" {
		if n.voters() < 2 {
			return ErrNoTransferTarget
		}
		return n.transferToAny(ctx)
	}
	s, ok, _, err := n.server(id)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoSuchMember
	}
	if s.Suffrage != raft.Voter {
		return ErrTargetNotVoter
	}
	return n.transfer(func() raft.Future { return n.raft.LeadershipTransferToServer(s.ID, s.Address) })
}

// LeaderAPI is the leader's API URL ("" when this node leads or none is known).
func (n *Node) LeaderAPI() string {
	api, _, _ := n.leaderAPI()
	return api
}

func timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return 10 * time.Second
}
