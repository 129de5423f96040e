package membership

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// fakeNodes serves /livez and /v1/cluster for pods kv-0, kv-1, ... with
// the views given; a nil view is a pod that does not answer.
func fakeNodes(t *testing.T, views []*clusterapi.Cluster) *Client {
	t.Helper()
	urls := make([]string, len(views))
	for i, v := range views {
		if v == nil {
			urls[i] = "http://127.0.0.1:1" // nothing listens there
			continue
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == clusterapi.PathCluster {
				if err := json.NewEncoder(w).Encode(v); err != nil {
					t.Error(err)
				}
			}
		}))
		t.Cleanup(srv.Close)
		urls[i] = srv.URL
	}
	return &Client{kvs: testutil.StoredKVS("kv"), http: &http.Client{}, URL: func(i int) string {
		if i < len(urls) {
			return urls[i]
		}
		return "http://127.0.0.1:1"
	}, PeerAddr: peerAddr}
}

func peerAddr(i int) string { return fmt.Sprintf("kv-%d.peers:7000", i) }

func voter(id string, healthy bool) clusterapi.Member {
	return clusterapi.Member{ID: id, Address: id + ".peers:7000", Role: clusterapi.RoleVoter, Healthy: healthy, Status: &clusterapi.NodeStatus{}}
}

// A member that lags may still list members the leader has removed, or
// miss one it added: the configuration is read from the leader itself.
func TestObserveReadsTheLeader(t *testing.T) {
	lagging := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-2", Members: []clusterapi.Member{voter("kv-0", true), voter("kv-1", true), voter("kv-2", true), voter("kv-3", true)}}
	leader := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-2", LeaderVerified: true, Members: []clusterapi.Member{voter("kv-0", true), voter("kv-1", false), voter("kv-2", true)}}

	o := fakeNodes(t, []*clusterapi.Cluster{lagging, lagging, leader}).Observe(t.Context(), 3, 0)
	if !o.FromLeader || o.Leader != 2 || len(o.Members) != 3 || o.Members[1].Healthy {
		t.Fatalf("from leader %v, leader %d, members %+v", o.FromLeader, o.Leader, o.Members)
	}

	// The leader is beyond the pods probed (kv-3 of a store scaled to 3):
	// the member's answer leads Observe to it.
	leader3 := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-3", LeaderVerified: true, Members: []clusterapi.Member{voter("kv-0", true), voter("kv-1", true), voter("kv-2", true), voter("kv-3", true)}}
	lagging3 := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-3", Members: []clusterapi.Member{voter("kv-0", true), voter("kv-1", true), voter("kv-2", true)}}
	o = fakeNodes(t, []*clusterapi.Cluster{lagging3, lagging3, lagging3, leader3}).Observe(t.Context(), 3, 0)
	if !o.FromLeader || o.Leader != 3 || len(o.Members) != 4 {
		t.Fatalf("from leader %v, leader %d, members %+v", o.FromLeader, o.Leader, o.Members)
	}
}

func TestObserveWithoutTheLeaderGivesPlanNoMembers(t *testing.T) {
	noLeader := &clusterapi.Cluster{ClusterID: "c", Members: []clusterapi.Member{voter("kv-0", true), voter("kv-1", true), voter("kv-2", true)}}
	namesKv2 := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-2", Members: noLeader.Members}
	// kv-2 says it leads, but no quorum confirmed it (a deposed leader
	// that has not noticed), or its configuration is not committed (a
	// removal that is lost if kv-2 dies now).
	deposed := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-2", Members: noLeader.Members}
	uncommitted := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-2", LeaderVerified: true, CommitIndex: 9, ConfigurationIndex: 10, Members: noLeader.Members}
	for name, views := range map[string][]*clusterapi.Cluster{
		"no member knows a leader":     {noLeader, noLeader, noLeader},
		"the leader named is not seen": {namesKv2, namesKv2, nil},
		"nobody answers":               {nil, nil, nil},
		"a leader no quorum confirmed": {namesKv2, namesKv2, deposed},
		"an uncommitted configuration": {namesKv2, namesKv2, uncommitted},
	} {
		t.Run(name, func(t *testing.T) {
			o := fakeNodes(t, views).Observe(t.Context(), 3, 0)
			if o.FromLeader || o.Leader != -1 || o.Members != nil {
				t.Fatalf("from leader %v, leader %d, members %+v", o.FromLeader, o.Leader, o.Members)
			}
			if (views[0] != nil) != (o.View != nil) {
				t.Fatalf("view %+v: status should still see what a member answered", o.View)
			}
		})
	}
}

// Every running pod is asked for its own cluster ID and state, leader or
// not: that is what the bootstrap guard and the mismatch check go on.
func TestObserveReportsEveryPod(t *testing.T) {
	emptyPod := &clusterapi.Cluster{}
	noLeader := &clusterapi.Cluster{ClusterID: "c1", HasState: true, Members: []clusterapi.Member{voter("kv-1", false), voter("kv-2", false)}}
	o := fakeNodes(t, []*clusterapi.Cluster{emptyPod, noLeader, nil, {HasState: true}}).Observe(t.Context(), 4, 0)
	want := []Report{{Ordinal: 0, ClusterID: "", HasState: false}, {Ordinal: 1, ClusterID: "c1", HasState: true}, {Ordinal: 3, ClusterID: "", HasState: true}}
	if fmt.Sprint(o.Reports) != fmt.Sprint(want) {
		t.Fatalf("reports %+v, want %+v", o.Reports, want)
	}
	if o.FromLeader || o.Leader != -1 {
		t.Fatalf("no pod leads, yet from leader %v, leader %d", o.FromLeader, o.Leader)
	}
}

// A voter that reports a volume not admitted to vote lost its volume: it
// is neither healthy nor kept as it is. A kvnode that reports no
// incarnation (an older version) is not lost. A member recorded under an
// address other than its pod's DNS name is misaddressed.
func TestObserveLostVolumesAndAddresses(t *testing.T) {
	admitted := voter("kv-0", true)
	admitted.Status = &clusterapi.NodeStatus{Incarnation: "a", Admitted: true}
	lost := voter("kv-1", true)
	lost.Status = &clusterapi.NodeStatus{Incarnation: "b"}
	older := voter("kv-2", true)
	older.Address = "10.0.0.7:7000"
	pending := clusterapi.Member{ID: "kv-3", Address: peerAddr(3), Role: clusterapi.RoleNonVoter, Healthy: true, Status: &clusterapi.NodeStatus{Incarnation: "c"}}
	leader := &clusterapi.Cluster{ClusterID: "c", Leader: "kv-0", LeaderVerified: true, Members: []clusterapi.Member{admitted, lost, older, pending}}
	o := fakeNodes(t, []*clusterapi.Cluster{leader, nil, nil, nil}).Observe(t.Context(), 4, 0)
	want := []Member{
		{Ordinal: 0, Voter: true, Healthy: true, CaughtUp: true},
		{Ordinal: 1, Voter: true, Healthy: false, CaughtUp: true, Lost: true},
		{Ordinal: 2, Voter: true, Healthy: true, CaughtUp: true, Misaddressed: true},
		{Ordinal: 3, Healthy: true, CaughtUp: true},
	}
	if fmt.Sprint(o.Members) != fmt.Sprint(want) {
		t.Fatalf("members %+v\nwant    %+v", o.Members, want)
	}
}

// Without a leader, the view kept is that of a member that holds its data:
// a pod back on a new volume (pod 0 here) knows no configuration, and
// QuorumLoss would see no voters in its view.
func TestObserveWithoutLeaderKeepsAViewThatHoldsData(t *testing.T) {
	pending := &clusterapi.Cluster{ClusterID: "c", HasState: true, Incarnation: "new"}
	survivor := &clusterapi.Cluster{ClusterID: "c", HasState: true, Incarnation: "old", Admitted: true, ConfigurationIndex: 7, LastIndex: 40, Term: 3,
		Members: []clusterapi.Member{voter("kv-0", false), voter("kv-1", false), voter("kv-2", true)}}
	o := fakeNodes(t, []*clusterapi.Cluster{pending, pending, survivor}).Observe(t.Context(), 3, 0)
	if o.View != survivor && (o.View == nil || o.View.ConfigurationIndex != 7) {
		t.Fatalf("view %+v, want the survivor's", o.View)
	}
	msg, who := QuorumLoss(o, name)
	if who != 2 || !strings.Contains(msg, "kv-2") {
		t.Fatalf("QuorumLoss = %q, %d; want survivor kv-2", msg, who)
	}
}
