package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

// A backup of a 3-member cluster, taken while clients write, restores
// into a new cluster: its first member starts from the backup, the others
// join, and every write acknowledged before the backup is read back
// through every member, under a new cluster ID.
func TestRestoreStartsANewClusterOthersJoin(t *testing.T) {
	a := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := a.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "a.kvb")
	acked, oldID := writesBeforeBackup(t, a, func() {
		leader := leaderOf(t, a)
		resp, err := a.Admin.Get(leader.API + clusterapi.PathBackup)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(f, resp.Body)
		resp.Body.Close()
		f.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("backup: %d %v", resp.StatusCode, err)
		}
	})

	b := newCluster(t)
	first, err := b.Add()
	if err != nil {
		t.Fatal(err)
	}
	first.Args = []string{"--restore-from", file}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	othersJoin(ctx, t, b, oldID)
	err = harness.Retry(ctxFor(t, 30*time.Second), func() error {
		for _, m := range b.Members() {
			for k, v := range acked {
				if code, body, err := kv(b, m, "GET", k, "", ""); err != nil || code != 200 || body != v {
					return fmt.Errorf("%s through %s: %d %q %v", k, m.ID, code, body, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := kv(b, b.Member(2), "PUT", "new", "1", ""); err != nil || code != 201 {
		t.Fatalf("PUT on the restored cluster: %d %s %v", code, body, err)
	}
}

// The operator's way: a backup Job (`kvnode backup`, with the admin
// certificate, through any member) writes a checked backup of a cluster
// under load to a directory; a restore Job (`kvnode restore`) prepares
// the first member's empty volume offline; that member then starts as
// any other (--bootstrap never, no restore flag) and leads a new cluster,
// which the others join empty; every write acknowledged before the backup
// is read back through every member, under a new cluster ID.
func TestRestoreJobStartsANewClusterOthersJoin(t *testing.T) {
	a := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := a.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM, keyPEM, err := a.CA.Issue(harness.AdminLeaf(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"admin.crt": certPEM, "admin.key": keyPEM, "ca.crt": a.CA.CertPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := "file://" + filepath.Join(dir, "a-20260101000000.kvbackup")
	acked, oldID := writesBeforeBackup(t, a, func() {
		// Through a follower: it redirects to the leader.
		var via *harness.Member
		for _, m := range a.Members() {
			if m != leaderOf(t, a) {
				via = m
			}
		}
		job(t, "backup", "--server", via.API, "--ca", filepath.Join(dir, "ca.crt"), "--cert", filepath.Join(dir, "admin.crt"), "--key", filepath.Join(dir, "admin.key"), "--to", file)
	})

	b := newCluster(t)
	first, err := b.Add()
	if err != nil {
		t.Fatal(err)
	}
	job(t, "restore", "--from", file, "--data-dir", first.DataDir, "--node-id", first.ID, "--peer-advertise", first.PeerAddr)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	othersJoin(ctx, t, b, oldID)
	verify(t, b, acked)
}

// job runs a kvnode subcommand and fails the test unless it succeeds.
func job(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(kvnodeBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kvnode %s: %v\n%s", args[0], err, out)
	}
}

// Two of three members lose their volumes for good: no quorum, no leader.
// The survivor, started with --recover-alone, becomes the whole cluster
// with every write it holds; the others join it again as new members; a
// restart with the same token does not reset the configuration again.
func TestRecoverAloneAfterQuorumLoss(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	survivor := c.Member(0)
	acked := map[string]string{}
	for i := 0; i < 100; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprint(i)
		if code, body, err := kv(c, survivor, "PUT", k, v, ""); err != nil || code != 201 {
			t.Fatalf("PUT %s: %d %s %v", k, code, body, err)
		}
		acked[k] = v
	}
	// The survivor holds every acknowledged write once it has applied the
	// last commit index it knows of.
	err := harness.Retry(ctx, func() error {
		self, err := selfStatus(c, survivor)
		if err != nil || self.AppliedIndex < self.CommitIndex || self.LastIndex < self.CommitIndex {
			return fmt.Errorf("%+v %v", self, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members()[1:] {
		m.Kill()
		if err := m.WipeData(); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, err := kv(c, survivor, "PUT", "no-quorum", "x", ""); err == nil && code == 201 {
		t.Fatal("a write was acknowledged without a quorum")
	}
	survivor.Stop()
	survivor.Args = []string{"--recover-alone", "t1"}
	if err := survivor.Start(); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0")
	for k, v := range acked {
		err := harness.Retry(ctxFor(t, 20*time.Second), func() error {
			if code, body, err := kv(c, survivor, "GET", k, "", ""); err != nil || code != 200 || body != v {
				return fmt.Errorf("%s: %d %q %v", k, code, body, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members()[1:] {
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.Join(ctx, m, true); err != nil {
			t.Fatal(err)
		}
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	survivor.Stop()
	if err := survivor.Start(); err != nil { // still --recover-alone t1
		t.Fatal(err)
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	verify(t, c, acked)
}

// The operator's way: POST /v1/cluster/recover on the survivor, which
// restarts as the whole cluster. Here the leader and another member lose
// their volumes and come back empty: they refuse to vote, so the survivor,
// a follower, can never be elected. Refused while a leader is known, and
// for a token used before.
func TestRecoverOverTheAPI(t *testing.T) {
	c := newCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(t, c)
	var survivor *harness.Member
	var lost []*harness.Member
	for _, m := range c.Members() {
		if m != leader && survivor == nil {
			survivor = m
		} else {
			lost = append(lost, m)
		}
	}
	var aerr *harness.AdminError
	recoverReq := clusterapi.RecoverRequest{Token: "t1"}
	if err := c.AdminDo(ctx, survivor, http.MethodPost, clusterapi.PathRecover, recoverReq, nil); !errors.As(err, &aerr) || aerr.Status != 409 {
		t.Fatalf("recover with a leader: %v, want 409", err)
	}
	for i := 0; i < 50; i++ {
		if code, body, err := kv(c, survivor, "PUT", fmt.Sprintf("k%d", i), "v", ""); err != nil || code != 201 {
			t.Fatalf("PUT: %d %s %v", code, body, err)
		}
	}
	err := harness.Retry(ctx, func() error {
		self, err := selfStatus(c, survivor)
		if err != nil || self.AppliedIndex < self.CommitIndex || self.LastIndex < self.CommitIndex {
			return fmt.Errorf("%+v %v", self, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range lost {
		m.Kill()
		if err := m.WipeData(); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(); err != nil { // back on an empty volume: pending
			t.Fatal(err)
		}
	}
	err = harness.Retry(ctx, func() error {
		err := c.AdminDo(ctx, survivor, http.MethodPost, clusterapi.PathRecover, recoverReq, nil)
		if errors.As(err, &aerr) && aerr.Status == 202 {
			return nil
		}
		return fmt.Errorf("recover: %v", err) // a leader known a little longer
	})
	if err != nil {
		t.Fatal(err)
	}
	survivor.Stop() // it exits by itself; this reaps it
	if err := survivor.Start(); err != nil {
		t.Fatal(err)
	}
	// Ask the survivor: the others are in no configuration yet.
	err = harness.Retry(ctxFor(t, 30*time.Second), func() error {
		var info clusterapi.Cluster
		if err := c.AdminDo(ctx, survivor, http.MethodGet, clusterapi.PathCluster, nil, &info); err != nil {
			return err
		}
		if v := info.Voters(); len(v) != 1 || v[0] != survivor.ID || info.Leader != survivor.ID {
			return fmt.Errorf("voters %v, leader %q", v, info.Leader)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range lost {
		if err := c.Join(ctx, m, true); err != nil {
			t.Fatal(err)
		}
	}
	waitVoters(t, c, "kv-0", "kv-1", "kv-2")
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("k%d", i)
		for _, m := range c.Members() {
			if code, body, err := kv(c, m, "GET", k, "", ""); err != nil || code != 200 || body != "v" {
				t.Fatalf("%s through %s: %d %q %v", k, m.ID, code, body, err)
			}
		}
	}
	if err := c.AdminDo(ctx, survivor, http.MethodPost, clusterapi.PathRecover, recoverReq, nil); !errors.As(err, &aerr) || aerr.Status != 409 {
		t.Fatalf("recover again with a leader and the same token: %v, want 409", err)
	}
}

// othersJoin adds two empty members to b, whose first member holds a
// restore, and waits until all three are voters of a cluster with a new
// ID (not the backup's, oldID).
func othersJoin(ctx context.Context, t *testing.T, b *harness.Cluster, oldID string) {
	t.Helper()
	for i := 1; i < 3; i++ {
		m, err := b.Add()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		if err := b.Join(ctx, m, true); err != nil {
			t.Fatal(err)
		}
	}
	info := waitVoters(t, b, "kv-0", "kv-1", "kv-2")
	if info.ClusterID == "" || info.ClusterID == oldID {
		t.Fatalf("restored cluster ID %q, the backup's %q", info.ClusterID, oldID)
	}
}

// writesBeforeBackup runs writers on a for a second, then take (which
// backs a up while they go on), and returns the writes acknowledged
// before take began and a's cluster ID; a is closed.
func writesBeforeBackup(t *testing.T, a *harness.Cluster, take func()) (map[string]string, string) {
	t.Helper()
	w := startWriter(a, 4)
	time.Sleep(time.Second)
	acked := map[string]string{}
	w.mu.Lock()
	for k, v := range w.acked {
		acked[k] = v
	}
	w.mu.Unlock()
	take()
	w.finish()
	infoA, err := a.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged before the backup", len(acked))
	}
	return acked, infoA.ClusterID
}
