package clusterapi

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// The field names are the contract with operators already deployed: a
// renamed tag would silently read as zero on the other side.
func TestWireFormat(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{Cluster{ClusterID: "c1", HasState: true, Leader: "kv-0", CommitIndex: 7, Members: []Member{
			{ID: "kv-0", Address: "kv-0:8081", API: "https://kv-0:8080", Role: RoleVoter, Leader: true, Healthy: true, Status: &NodeStatus{
				ID: "kv-0", State: "Leader", Term: 2, LeaderID: "kv-0", AppliedIndex: 7, CommitIndex: 7, LastIndex: 7,
				LastContact: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Ready: true, ClusterID: "c1",
			}},
			{ID: "kv-1", Address: "kv-1:8081", Role: RoleNonVoter, Error: "status 503"},
		}}, `{"clusterID":"c1","hasState":true,"leader":"kv-0","commitIndex":7,"configurationIndex":0,"leaderVerified":false,"incarnation":"","admitted":false,"lastIndex":0,"term":0,"members":[` +
			`{"id":"kv-0","address":"kv-0:8081","api":"https://kv-0:8080","role":"voter","leader":true,"healthy":true,"status":` +
			`{"id":"kv-0","state":"Leader","term":2,"leaderID":"kv-0","appliedIndex":7,"commitIndex":7,"lastIndex":7,"lastContact":"2026-01-02T03:04:05Z","ready":true,"clusterID":"c1","incarnation":"","admitted":false}},` +
			`{"id":"kv-1","address":"kv-1:8081","role":"non-voter","leader":false,"healthy":false,"error":"status 503"}]}`},
		{AddMemberRequest{ID: "kv-1", Address: "kv-1:8081", API: "https://kv-1:8080"}, `{"id":"kv-1","address":"kv-1:8081","api":"https://kv-1:8080"}`},
		{TransferRequest{}, `{}`},
		{TransferRequest{ID: "kv-2"}, `{"id":"kv-2"}`},
		{Result{Result: "ok", ID: "kv-1"}, `{"id":"kv-1","result":"ok"}`},
		{ReadIndexResponse{Index: 9}, `{"index":9}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%T:\n got %s\nwant %s", c.v, b, c.want)
		}
	}
}

func TestMemberPath(t *testing.T) {
	for path, want := range map[string]string{
		PathMember:  "/v1/cluster/members/kv-3",
		PathPromote: "/v1/cluster/members/kv-3/promote",
		PathDemote:  "/v1/cluster/members/kv-3/demote",
	} {
		if got := MemberPath(path, "kv-3"); got != want {
			t.Errorf("MemberPath(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestBatchFraming(t *testing.T) {
	events := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("x"), 300)}
	got, err := DecodeBatch(EncodeBatch(events))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(events) {
		t.Fatalf("%d events back, want %d", len(got), len(events))
	}
	for i := range events {
		if !bytes.Equal(got[i], events[i]) {
			t.Errorf("event %d: %q, want %q", i, got[i], events[i])
		}
	}
	// The events are copies: a stored value must not pin the body.
	body := EncodeBatch(events)
	got, _ = DecodeBatch(body)
	clear(body)
	if string(got[0]) != "a" {
		t.Errorf("an event shares the body's memory")
	}
	if got, err := DecodeBatch(nil); err != nil || len(got) != 0 {
		t.Errorf("empty body: %v, %v", got, err)
	}

	// A body from a hostile or broken sender is refused whole, naming
	// where it went wrong, and never reads past its end.
	tooMany := EncodeBatch(make([][]byte, MaxBatchEvents+1))
	for name, body := range map[string][]byte{
		"bad length":          {0x80},
		"past the end":        append(binary.AppendUvarint(nil, 10), "short"...),
		"over the event size": binary.AppendUvarint(nil, MaxBatchEventBytes+1),
		"huge length":         binary.AppendUvarint(nil, math.MaxUint64),
		"too many":            tooMany,
	} {
		if _, err := DecodeBatch(body); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "event") {
			t.Errorf("%s: %v does not name the event", name, err)
		}
	}
}
