package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/membership"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
)

// fakeCluster stands in for the kvnode pods, which cannot run under
// envtest (no kubelet): per KeyValueStore it keeps a Raft configuration
// that the membership calls change as a kvnode cluster would. The real
// client is tested against real kvnode processes in package membership.
type fakeCluster struct {
	mu       sync.Mutex
	clusters map[string]*fakeRaft
}

type fakeRaft struct {
	bootstrapped bool
	voters       map[int]bool // ordinal -> voter
	leader       int
	running      map[int]bool
	calls        []string
	// reports replace what a pod says about itself (its volume's cluster
	// ID and state) through GET /v1/cluster.
	reports map[int]membership.Report
	// storage is what each member reports of its disk budget.
	storage map[int]clusterapi.StorageStatus
	// failing makes a membership call ("AddNonVoter 1") fail with its
	// error instead of changing the configuration.
	failing map[string]error
}

// setStorage makes member ord report s as its disk budget.
func (f *fakeCluster) setStorage(name string, ord int, s clusterapi.StorageStatus) {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.storage == nil {
		r.storage = map[int]clusterapi.StorageStatus{}
	}
	r.storage[ord] = s
}

func newFakeCluster() *fakeCluster { return &fakeCluster{clusters: map[string]*fakeRaft{}} }

func (f *fakeCluster) raft(name string) *fakeRaft {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.clusters[name]
	if r == nil {
		r = &fakeRaft{voters: map[int]bool{}, leader: -1, running: map[int]bool{}, reports: map[int]membership.Report{}, failing: map[string]error{}}
		f.clusters[name] = r
	}
	return r
}

// setRunning says which pods answer.
func (f *fakeCluster) setRunning(name string, ords ...int) {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	r.running = map[int]bool{}
	for _, o := range ords {
		r.running[o] = true
	}
}

// setReport makes pod ord report a volume holding cluster id ("": none
// named) and, with state, Raft state.
func (f *fakeCluster) setReport(name string, ord int, id string, state bool) {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	r.reports[ord] = membership.Report{Ordinal: ord, ClusterID: id, HasState: state}
}

// setLeader makes pod ord the leader; -1 is an election in progress, in
// which the members answer but none leads.
func (f *fakeCluster) setLeader(name string, ord int) {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	r.leader = ord
}

// setFailing makes the call ("AddNonVoter 1") fail with err; nil lets it
// succeed again.
func (f *fakeCluster) setFailing(name, call string, err error) {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(r.failing, call)
		return
	}
	r.failing[call] = err
}

func (f *fakeCluster) calls(name string) []string {
	r := f.raft(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), r.calls...)
}

type fakeClient struct {
	f    *fakeCluster
	kvs  *kvv1.KeyValueStore
	name string
}

func (f *fakeCluster) client(kvs *kvv1.KeyValueStore) *fakeClient {
	return &fakeClient{f: f, kvs: kvs, name: kvs.Namespace + "/" + kvs.Name}
}

func (c *fakeClient) Close() {}

// clusterID is the ID a cluster the fake bootstraps gets.
func (c *fakeClient) clusterID() string { return "fake-" + c.kvs.Name }

func (c *fakeClient) Observe(_ context.Context, pods int, _ uint64) membership.Observation {
	r := c.f.raft(c.name)
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	o := membership.Observation{Leader: -1}
	for ord := range r.running {
		o.Running = append(o.Running, ord)
	}
	sort.Ints(o.Running)
	for _, ord := range o.Running {
		rep, ok := r.reports[ord]
		if !ok {
			rep = membership.Report{Ordinal: ord}
			if _, member := r.voters[ord]; member && r.bootstrapped {
				rep.ClusterID, rep.HasState = c.clusterID(), true
			}
		}
		o.Reports = append(o.Reports, rep)
	}
	if !r.bootstrapped {
		return o
	}
	o.View = &clusterapi.Cluster{ClusterID: c.clusterID(), HasState: true}
	if r.leader >= 0 {
		o.View.Leader = kvv1.PodName(c.kvs, r.leader)
	}
	for ord, v := range r.voters {
		role := clusterapi.RoleNonVoter
		if v {
			role = clusterapi.RoleVoter
		}
		m := clusterapi.Member{ID: kvv1.PodName(c.kvs, ord), Role: role, Healthy: r.running[ord]}
		if s, ok := r.storage[ord]; ok {
			m.Status = &clusterapi.NodeStatus{Storage: &s}
		}
		o.View.Members = append(o.View.Members, m)
		o.Members = append(o.Members, membership.Member{Ordinal: ord, Voter: v, Healthy: r.running[ord], CaughtUp: r.running[ord]})
	}
	sort.Slice(o.View.Members, func(i, j int) bool { return o.View.Members[i].ID < o.View.Members[j].ID })
	if r.leader < 0 {
		// As the real client: without the leader's answer, a view for
		// status but no configuration to plan on.
		o.Members = nil
		return o
	}
	o.FromLeader, o.Leader = true, r.leader
	return o
}

func (c *fakeClient) Execute(_ context.Context, s membership.Step, _ int) error {
	r := c.f.raft(c.name)
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	call := fmt.Sprintf("%s %d", s.Action, s.Ordinal)
	r.calls = append(r.calls, call)
	if err := r.failing[call]; err != nil {
		return err
	}
	switch s.Action {
	case kvv1.ActionBootstrap:
		if r.bootstrapped {
			return nil
		}
		r.bootstrapped, r.voters[s.Ordinal], r.leader = true, true, s.Ordinal
	case kvv1.ActionAddNonVoter:
		if _, ok := r.voters[s.Ordinal]; !ok {
			r.voters[s.Ordinal] = false
		}
	case kvv1.ActionPromote:
		r.voters[s.Ordinal] = true
	case kvv1.ActionDemote:
		r.voters[s.Ordinal] = false
	case kvv1.ActionRemove:
		delete(r.voters, s.Ordinal)
	case kvv1.ActionTransfer:
		for o, v := range r.voters {
			if v && o != r.leader {
				r.leader = o
				break
			}
		}
	}
	return nil
}
