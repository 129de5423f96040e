package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestVolumeIncarnation(t *testing.T) {
	dir := t.TempDir()
	v, err := openVolume(dir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	first := v.get()
	if first.ID == "" || first.Admitted {
		t.Fatalf("a new volume that does not bootstrap: %+v, want a pending incarnation", first)
	}
	if err := v.mayVote(7); err == nil {
		t.Fatal("a pending node may vote")
	}
	// Reopening keeps the identity.
	v, err = openVolume(dir, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.get(); got != first {
		t.Fatalf("reopened: %+v, want %+v", got, first)
	}
	if err := v.admit(5); err != nil {
		t.Fatal(err)
	}
	for term, ok := range map[uint64]bool{4: false, 5: false, 6: true} {
		if err := v.mayVote(term); (err == nil) != ok {
			t.Errorf("admitted after term 5: vote in term %d = %v", term, err)
		}
	}
	// Admission is on disk.
	v, err = openVolume(dir, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.get(); !got.Admitted || got.VoteAfterTerm != 5 || got.ID != first.ID {
		t.Fatalf("after a restart: %+v", got)
	}
	// A new volume is a new incarnation.
	other, err := openVolume(t.TempDir(), false, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := other.get(); got.ID == first.ID || !got.Admitted || got.VoteAfterTerm != 0 {
		t.Fatalf("a bootstrapping volume: %+v", got)
	}
	// An admitted incarnation whose Raft state is gone (its log deleted
	// by hand) is a new, pending one: its old admission entry, replayed,
	// must not admit it again.
	v, err = openVolume(dir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.get(); got.ID == first.ID || got.Admitted {
		t.Fatalf("admitted volume without Raft state: %+v, want a new pending incarnation", got)
	}
	// A damaged identity is refused, naming the file.
	if err := os.WriteFile(filepath.Join(dir, incarnationFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openVolume(dir, true, false); err == nil || !strings.Contains(err.Error(), incarnationFile) {
		t.Fatalf("damaged incarnation file: %v", err)
	}
}

// The guard answers vote and pre-vote requests of a pending node itself,
// with a refusal, and passes everything else on to raft.
func TestVoteGuardRefusesWhilePending(t *testing.T) {
	dir := t.TempDir()
	n, _ := openNode(t, dir, false)
	if n.vol.get().Admitted {
		t.Fatal("a node started without bootstrap on a new volume is admitted")
	}
	if n.mayCampaign() == nil {
		t.Fatal("a pending node may stand for election")
	}
	vote := &raft.RequestVoteRequest{Term: 3, RPCHeader: raft.RPCHeader{ID: []byte("other")}}
	resp, err, handled := n.voteGuard(raft.RPC{Command: vote})
	if !handled || err != nil || resp.(*raft.RequestVoteResponse).Granted || resp.(*raft.RequestVoteResponse).Term != 3 {
		t.Fatalf("vote while pending: %#v %v %v", resp, err, handled)
	}
	pre := &raft.RequestPreVoteRequest{Term: 3}
	if resp, _, handled := n.voteGuard(raft.RPC{Command: pre}); !handled || resp.(*raft.RequestPreVoteResponse).Granted {
		t.Fatalf("pre-vote while pending: %#v %v", resp, handled)
	}
	if _, _, handled := n.voteGuard(raft.RPC{Command: &raft.AppendEntriesRequest{}}); handled {
		t.Fatal("the guard answered an append")
	}
	// The entry that admits another incarnation does nothing; its own does.
	n.applyAdmission(metaAdmitKey("node-0"), "someone-else", 9)
	if n.vol.get().Admitted {
		t.Fatal("admitted by an entry for another incarnation")
	}
	n.applyAdmission(metaAdmitKey("node-0"), n.vol.get().ID, 9)
	if _, _, handled := n.voteGuard(raft.RPC{Command: &raft.RequestVoteRequest{Term: 9}}); !handled {
		t.Fatal("a vote in the term of the admission is granted")
	}
	if _, _, handled := n.voteGuard(raft.RPC{Command: &raft.RequestVoteRequest{Term: 10}}); handled {
		t.Fatal("a vote in a later term is refused")
	}
	if n.mayCampaign() != nil {
		t.Fatal("an admitted node may not stand for election")
	}
}
