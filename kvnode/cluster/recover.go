package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
)

// Recovery from the loss of a quorum.
//
// When a majority of the voters is gone for good (their volumes lost), no
// leader can be elected and nothing can be committed: Raft cannot tell a
// dead member from a slow one, and waits. Only a person can decide that
// the missing members are not coming back. Config.RecoverAlone is that
// decision for one survivor, the one whose log goes furthest: before raft
// starts, its configuration is reset to itself alone (hashicorp/raft's
// RecoverCluster), so it elects itself and serves what it holds; the others
// then join it as new members. What it costs: entries that other members
// committed and this one never received are lost, and entries this one
// holds that were never committed become committed. The log line and
// <data-dir>/recovered name the index it recovered at.
//
// It happens once per token: a member restarted with the same token (the
// flag is still on its command line) starts as usual, since by then other
// members may have joined, and resetting the configuration again would
// remove them.
const recoveredFile = "recovered"

type recoveryRecord struct {
	Token string    `json:"token"`
	Index uint64    `json:"index"`
	Term  uint64    `json:"term"`
	At    time.Time `json:"at"`
}

// recoverAlone runs before raft starts.
func (n *Node) recoverAlone(rc *raft.Config, token string, hasState bool) error {
	path := filepath.Join(n.cfg.DataDir, recoveredFile)
	if b, err := os.ReadFile(path); err == nil {
		var rec recoveryRecord
		if json.Unmarshal(b, &rec) == nil && rec.Token == token {
			return nil // done before; see above
		}
	}
	if !hasState {
		return fmt.Errorf("recover: %s holds no Raft state; only a member that holds the data can start a cluster alone", n.cfg.DataDir)
	}
	if inc := n.vol.get(); !inc.Admitted {
		return fmt.Errorf("recover: this member's volume is new (incarnation %s, not admitted): it may lack committed writes and cannot recover the cluster", inc.ID)
	}
	index, term, err := n.lastEntry()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	self := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeID), Address: n.trans.LocalAddr()}}}
	if err := raft.RecoverCluster(rc, &fsm{store: core.NewStore()}, n.log, n.log, n.snaps, n.trans, self); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	b, _ := json.Marshal(recoveryRecord{Token: token, Index: index, Term: term, At: time.Now().UTC()})
	if err := writeFileSync(path, b); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	n.cfg.Logger.Warn("recovered from the loss of a quorum: this member alone is the cluster; writes other members committed after its last entry are lost",
		"last-index", index, "last-term", term, "token", token)
	return nil
}

// lastEntry is the index and term of the last entry this node holds, in
// its log or, with an empty log, its latest snapshot.
func (n *Node) lastEntry() (uint64, uint64, error) {
	last, err := n.log.LastIndex()
	if err != nil {
		return 0, 0, err
	}
	if last > 0 {
		var l raft.Log
		if err := n.log.GetLog(last, &l); err != nil {
			return 0, 0, err
		}
		return l.Index, l.Term, nil
	}
	list, err := n.snaps.List()
	if err != nil {
		return 0, 0, err
	}
	if len(list) == 0 {
		return 0, 0, errors.New("neither log entries nor a snapshot")
	}
	return list[0].Index, list[0].Term, nil
}

// A recovery can also be asked for over the admin API (POST
// clusterapi.PathRecover), which is how the operator does it: the node
// records the request in <data-dir>/recover-request and restarts
// (Config.Restart); the next start recovers as if --recover-alone had
// given the token, then removes the request. A node that has a leader,
// holds no data or is not admitted refuses.
const recoverRequestFile = "recover-request"

// Errors of a recovery request.
var (
	ErrHasLeader     = errors.New("this cluster has a leader: recovery is only for a quorum that is lost for good")
	ErrCannotRecover = errors.New("this member cannot recover the cluster")
)

// RequestRecovery records a request to recover alone with token and
// restarts the node.
func (n *Node) RequestRecovery(token string) error {
	if token == "" {
		return fmt.Errorf("%w: a token is required", ErrCannotRecover)
	}
	if b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, recoveredFile)); err == nil {
		var rec recoveryRecord
		if json.Unmarshal(b, &rec) == nil && rec.Token == token {
			return fmt.Errorf("%w: it recovered with token %q before (at index %d); a new recovery needs a new token", ErrCannotRecover, token, rec.Index)
		}
	}
	if addr, _ := n.raft.LeaderWithID(); addr != "" {
		return ErrHasLeader
	}
	if inc := n.vol.get(); !inc.Admitted {
		return fmt.Errorf("%w: its volume is new (incarnation %s, not admitted) and may lack committed writes", ErrCannotRecover, inc.ID)
	}
	if has, err := raft.HasExistingState(n.log, n.log, n.snaps); err != nil || !has {
		return fmt.Errorf("%w: it holds no Raft state", ErrCannotRecover)
	}
	b, _ := json.Marshal(recoveryRecord{Token: token, At: time.Now().UTC()})
	if err := writeFileSync(filepath.Join(n.cfg.DataDir, recoverRequestFile), b); err != nil {
		return err
	}
	n.cfg.Logger.Warn("recovery requested: restarting to recover alone", "token", token)
	if n.cfg.Restart != nil {
		go n.cfg.Restart()
	}
	return nil
}

// requestedRecovery returns the token of a recovery asked for over the API.
func requestedRecovery(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, recoverRequestFile))
	if err != nil {
		return ""
	}
	var rec recoveryRecord
	if json.Unmarshal(b, &rec) != nil {
		return ""
	}
	return rec.Token
}
