package membership

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// reconcile runs Plan and Execute as the controller does, until there is
// nothing left to do, and returns the pod count the plan allows.
func reconcile(t *testing.T, c *Client, voters, pods int, bootstrapped *bool) int {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		o := c.Observe(ctx, pods+2, 1000)
		d := Plan(Observed{Voters: voters, Pods: pods, Current: pods, Bootstrapped: *bootstrapped, Running: o.Running, Members: o.Members, Leader: o.Leader, Reports: o.Reports})
		step, keep := d.Step, d.Keep
		if step.Action == "" {
			// Blocked: a change waits (a member not ready yet), it is not done.
			if *bootstrapped && len(o.Members) > 0 && keep == pods && d.Blocked == "" {
				return keep
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		via := step.Ordinal
		if len(o.Running) > 0 && step.Action != kvv1.ActionBootstrap {
			via = o.Running[0]
		}
		if err := c.Execute(ctx, step, via); err != nil {
			t.Logf("%s %d: %v (retrying)", step.Action, step.Ordinal, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if step.Action == kvv1.ActionBootstrap {
			*bootstrapped = true
		}
	}
	t.Fatal("membership did not settle")
	return 0
}

// The operator's membership loop against real kvnode processes: build a
// cluster of 3 from nothing, grow it to 5, shrink it back to 3.
func TestMembershipLoopWithRealKvnodes(t *testing.T) {
	dir := t.TempDir()
	bin, err := harness.BuildKvnode(filepath.Join("..", ".."), dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := harness.New(harness.Options{Binary: bin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	defer func() {
		if t.Failed() {
			h.DumpLogs(os.Stderr)
		}
	}()
	admin, key, _ := h.CA.Issue(harness.AdminLeaf(), time.Now())
	kvs := testutil.StoredKVS("kv") // pods kv-0, kv-1, ... as the harness names members
	c, err := NewClient(kvs, h.CA.CertPEM, admin, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.URL = func(i int) string {
		if i < len(h.Members()) {
			return h.Member(i).API
		}
		return "https://127.0.0.1:1" // no such pod
	}
	c.PeerAddr = func(i int) string { return h.Member(i).PeerAddr }
	start := func(n int) {
		for len(h.Members()) < n {
			m, err := h.Add()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	bootstrapped := false
	start(3)
	reconcile(t, c, 3, 3, &bootstrapped)
	assertVoters(t, c, 3, "0,1,2")

	start(5)
	reconcile(t, c, 5, 5, &bootstrapped)
	assertVoters(t, c, 5, "0,1,2,3,4")

	if keep := reconcile(t, c, 3, 3, &bootstrapped); keep != 3 {
		t.Fatalf("keep %d pods", keep)
	}
	assertVoters(t, c, 3, "0,1,2")
	h.Member(4).Stop()
	h.Member(3).Stop()
}

func assertVoters(t *testing.T, c *Client, pods int, want string) {
	t.Helper()
	o := c.Observe(context.Background(), pods, 1000)
	got := ""
	for _, m := range o.Members {
		if m.Voter {
			if got != "" {
				got += ","
			}
			got += fmt.Sprint(m.Ordinal)
		}
	}
	if got != want || o.Leader < 0 {
		t.Fatalf("voters %q (leader %d), want %q", got, o.Leader, want)
	}
}
