package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

type kvInput struct {
	op    string // put, get, delete
	key   string
	value string
}

type kvOutput struct {
	exists  bool
	value   string
	unknown bool // a write whose outcome the client never learned
}

type kvState struct {
	exists bool
	value  string
}

// kvModel is a register per key: PUT sets it, DELETE clears it, GET must
// see the latest. Histories are checked key by key.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(kvState), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "put":
			return true, kvState{exists: true, value: in.value}
		case "delete":
			return true, kvState{}
		default:
			return out.exists == st.exists && out.value == st.value, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch {
		case in.op == "get" && !out.exists:
			return fmt.Sprintf("get(%s) -> 404", in.key)
		case in.op == "get":
			return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
		case out.unknown:
			return fmt.Sprintf("%s(%s, %s) -> ?", in.op, in.key, in.value)
		}
		return fmt.Sprintf("%s(%s, %s)", in.op, in.key, in.value)
	},
}

// history records operations from many clients.
type history struct {
	mu  sync.Mutex
	ops []porcupine.Operation
	// acked is the last acknowledged write per client and key, for the
	// summary; the checker is what decides.
	counts map[string]int
}

func (h *history) add(client int, in kvInput, out kvOutput, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	switch {
	case out.unknown:
		h.counts["indeterminate "+in.op]++
	default:
		h.counts["ok "+in.op]++
	}
}

func linDuration(t *testing.T) time.Duration {
	if s := os.Getenv("KV_LIN_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KV_LIN_DURATION: %v", err)
		}
		return d
	}
	if testing.Short() {
		return 15 * time.Second
	}
	return 40 * time.Second
}

// linSeeds are the fault schedules to run: KV_LIN_SEED alone, or
// KV_LIN_SEEDS (default 3) schedules from the clock.
func linSeeds(t *testing.T) []int64 {
	if s := os.Getenv("KV_LIN_SEED"); s != "" {
		seed, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("KV_LIN_SEED: %v", err)
		}
		return []int64{seed}
	}
	n := 3
	if s := os.Getenv("KV_LIN_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("KV_LIN_SEEDS: %q", s)
		}
	}
	base := time.Now().UnixNano()
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = base + int64(i)*7919
	}
	return seeds
}

// Concurrent clients put, get and delete a few keys through random members
// while members are killed and restarted, leadership moves, members are
// cut off from their peers, the leader is paused, and leadership is handed
// to a paused member that acts on it when it resumes, cut off from the
// old leader. The recorded history must be linearizable
// (porcupine), final reads included: an acknowledged write that is missing
// at the end makes it fail.
//
// Each seed is a schedule of its own, on a new cluster.
func TestLinearizableUnderFaults(t *testing.T) {
	duration := linDuration(t)
	for _, seed := range linSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { linearizableUnderFaults(t, seed, duration) })
	}
}

func linearizableUnderFaults(t *testing.T, seed int64, duration time.Duration) {
	t.Logf("seed %d (KV_LIN_SEED reproduces the fault schedule), duration %v (KV_LIN_DURATION)", seed, duration)
	c := newCluster(t, "--snapshot-threshold", "500", "--snapshot-interval", "500ms")
	ctx := ctxFor(t, duration+3*time.Minute)
	if err := c.StartN(ctx, 3); err != nil {
		t.Fatal(err)
	}
	checkLinearizable(t, c, seed, false, func() map[string]int { return runFaults(t, c, seed, duration) })
}

// checkLinearizable runs the clients while faults injects faults, then
// heals the members, reads every key, and checks the history. With
// trustOutcome, a write that failed without keyapi.OutcomeUnknown is taken
// at its word, as not applied, and left out of the history: if it was
// applied after all, its value appears from nowhere and the check fails.
// Without it, every failed write may have been applied.
func checkLinearizable(t *testing.T, c *harness.Cluster, seed int64, trustOutcome bool, faults func() map[string]int) {
	h := &history{counts: map[string]int{}}
	const clients = 8
	keys := []string{"a", "b", "c", "d", "e", "f"}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		wg.Add(1)
		go func(cl int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(cl)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				members := c.Members()
				m := members[rng.Intn(len(members))]
				in := kvInput{key: keys[rng.Intn(len(keys))]}
				switch r := rng.Intn(10); {
				case r < 4:
					in.op, in.value = "put", fmt.Sprintf("%d-%d", cl, i)
				case r < 8:
					in.op = "get"
				default:
					in.op = "delete"
				}
				method := map[string]string{"put": "PUT", "get": "GET", "delete": "DELETE"}[in.op]
				query := ""
				if in.op == "get" && rng.Intn(2) == 0 {
					// Half the reads confirm leadership with the voters
					// (confirmRound), half may use the leader's lease.
					query = "consistency=strict"
				}
				call := time.Now().UnixNano()
				code, body, outcome, err := kvOutcome(c, m, method, in.key, in.value, query)
				ret := time.Now().UnixNano()
				switch {
				case in.op == "get" && err == nil && code == 200:
					h.add(cl, in, kvOutput{exists: true, value: body}, call, ret)
				case in.op == "get" && err == nil && code == 404:
					h.add(cl, in, kvOutput{}, call, ret)
				case in.op == "get":
					// A failed read has no effect: it is not part of the history.
					time.Sleep(10 * time.Millisecond)
				case err == nil && (code == 201 || code == 200):
					h.add(cl, in, kvOutput{}, call, ret)
				case neverSent(err):
					// A connection refused (a member down): the
					// request never left the client.
					h.mu.Lock()
					h.counts["not sent "+in.op]++
					h.mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				case trustOutcome && err == nil && outcome != keyapi.OutcomeUnknown:
					h.mu.Lock()
					h.counts["not applied "+in.op]++
					h.mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				default:
					// The write may still be applied at any later moment.
					if os.Getenv("KV_LIN_DEBUG") != "" {
						why := fmt.Sprint(code, " ", body, err)
						h.mu.Lock()
						h.counts["why "+why[:min(len(why), 70)]]++
						h.mu.Unlock()
					}
					h.add(cl, in, kvOutput{unknown: true}, call, math.MaxInt64)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}(cl)
	}

	injected := faults()
	close(stop)
	wg.Wait()

	// Heal everything and read every key once more, linearizably.
	for _, m := range c.Members() {
		m.Resume()
		m.Proxy().Heal()
		if !m.Running() {
			if err := m.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, k := range keys {
		in := kvInput{op: "get", key: k}
		err := harness.Retry(ctxFor(t, 30*time.Second), func() error {
			call := time.Now().UnixNano()
			code, body, err := kv(c, c.Member(0), "GET", k, "", "")
			ret := time.Now().UnixNano()
			switch {
			case err != nil:
				return err
			case code == 200:
				h.add(-1+clients, in, kvOutput{exists: true, value: body}, call, ret)
			case code == 404:
				h.add(-1+clients, in, kvOutput{}, call, ret)
			default:
				return fmt.Errorf("final read of %s: %d %s", k, code, body)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%v of faults: %v", time.Since(start).Round(time.Second), injected)
	t.Logf("operations: %v", h.counts)
	if h.counts["ok put"] < 50 || h.counts["ok get"] < 50 {
		t.Fatalf("too few successful operations to mean anything: %v", h.counts)
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, 3*time.Minute)
	switch res {
	case porcupine.Ok:
		t.Logf("history of %d operations is linearizable", len(h.ops))
	case porcupine.Illegal:
		path := fmt.Sprintf("%s/linearizability-%d.html", os.TempDir(), seed)
		if f, err := os.Create(path); err == nil {
			if err := porcupine.Visualize(kvModel, info, f); err != nil {
				t.Logf("visualization: %v", err)
			}
			f.Close()
		}
		t.Fatalf("history is NOT linearizable (seed %d); visualization in %s", seed, path)
	default:
		t.Fatalf("the checker timed out on %d operations (seed %d)", len(h.ops), seed)
	}
}

// neverSent reports whether err is a failure to connect, so that nothing
// of the request was sent.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// runFaults injects one fault at a time until duration has passed and
// returns how many of each it injected.
func runFaults(t *testing.T, c *harness.Cluster, seed int64, duration time.Duration) map[string]int {
	rng := rand.New(rand.NewSource(seed))
	counts := map[string]int{}
	deadline := time.Now().Add(duration)
	ctx := context.Background()
	leader := func() *harness.Member {
		info, err := c.Info(ctx)
		if err != nil {
			return nil
		}
		for _, m := range c.Members() {
			if m.ID == info.Leader {
				return m
			}
		}
		return nil
	}
	pause := func() { time.Sleep(time.Duration(500+rng.Intn(1500)) * time.Millisecond) }
	for time.Now().Before(deadline) {
		pause()
		members := c.Members()
		victim := members[rng.Intn(len(members))]
		kinds := []string{"kill", "kill leader", "restart", "transfer leadership", "partition", "partition leader", "lost volume", "restart during membership change", "pause leader", "pause transfer target"}
		kind := kinds[rng.Intn(len(kinds))]
		if kind == "kill leader" || kind == "partition leader" || kind == "pause leader" {
			if l := leader(); l != nil {
				victim = l
			}
		}
		counts[kind]++
		switch kind {
		case "kill", "kill leader":
			victim.Kill()
			pause()
			if err := victim.Start(); err != nil {
				t.Fatalf("restart %s: %v", victim.ID, err)
			}
		case "restart":
			victim.Stop()
			if err := victim.Start(); err != nil {
				t.Fatalf("restart %s: %v", victim.ID, err)
			}
		case "lost volume":
			lostVolume(t, c, leader(), pause)
		case "restart during membership change":
			restartDuringMembershipChange(t, c, victim, members[rng.Intn(len(members))], pause)
		case "transfer leadership":
			_ = c.AdminDo(ctx, victim, http.MethodPost, clusterapi.PathLeader, nil, nil)
		case "pause leader":
			// SIGSTOP: its sockets stay open and what it is sent waits, so
			// that it acts on stale answers and requests when it resumes.
			victim.Pause()
			pause()
			victim.Resume()
		case "pause transfer target":
			// A transfer to a paused follower, which acts on the TimeoutNow
			// when it resumes, cut off from the old leader (and, half the
			// time, the old leader from it).
			old := leader()
			if old == nil {
				break
			}
			target := members[rng.Intn(len(members))]
			if target == old {
				target = members[(target.Index+1)%len(members)]
			}
			both := rng.Intn(2) == 0
			target.Pause()
			_, _, _ = c.Transfer(ctx, old, target.ID)
			target.Proxy().Cut(old.Index)
			if both {
				old.Proxy().Cut(target.Index)
			}
			pause()
			target.Resume()
			pause()
			target.Proxy().Heal()
			old.Proxy().Heal()
		case "partition", "partition leader":
			victim.Proxy().Cut()
			for _, o := range members {
				if o != victim {
					o.Proxy().Cut(victim.Index)
				}
			}
			pause()
			pause()
			for _, o := range members {
				o.Proxy().Heal()
			}
		}
	}
	return counts
}

// lostVolume is the fault that lost acknowledged writes before members
// remembered their volumes' incarnations: a follower is cut off, the other
// follower loses its volume and restarts empty, and the leader dies. The
// cut-off follower lacks the latest writes and must not be elected with
// the emptied member's vote. Then everything heals and the emptied member
// is re-admitted as the operator would: removed, added, promoted.
func lostVolume(t *testing.T, c *harness.Cluster, leader *harness.Member, pause func()) {
	if leader == nil {
		return
	}
	behind, emptied := followers(c, leader)
	isolate(c, behind)
	pause()
	emptied.Kill()
	if err := emptied.WipeData(); err != nil {
		t.Fatal(err)
	}
	if err := emptied.Start(); err != nil {
		t.Fatalf("restart %s on an empty volume: %v", emptied.ID, err)
	}
	leader.Kill()
	healAll(c)
	pause()
	if err := leader.Start(); err != nil {
		t.Fatalf("restart %s: %v", leader.ID, err)
	}
	readmit(t, c, emptied)
}

// readmit removes m and adds it back as a voter, as the operator does
// with a member that lost its volume.
func readmit(t *testing.T, c *harness.Cluster, m *harness.Member) {
	ctx := ctxFor(t, 2*time.Minute)
	if err := c.Remove(ctx, m); err != nil {
		t.Fatalf("remove %s: %v", m.ID, err)
	}
	if err := c.Join(ctx, m, true); err != nil {
		t.Fatalf("re-add %s: %v", m.ID, err)
	}
}

// restartDuringMembershipChange removes member m and adds it back while
// another member (perhaps the leader, perhaps m itself) restarts in the
// middle of the change.
func restartDuringMembershipChange(t *testing.T, c *harness.Cluster, m, restarted *harness.Member, pause func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pause()
		restarted.Stop()
		if err := restarted.Start(); err != nil {
			t.Errorf("restart %s: %v", restarted.ID, err)
		}
	}()
	readmit(t, c, m)
	<-done
}
