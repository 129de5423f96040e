package cluster

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// The leader here is a stand-in that answers what a leader may answer,
// including what a real one answers only under faults (a connection cut
// mid-answer, a half-read batch); the real leader's side of batches is
// covered by the cluster tests, which forward through followers.

// fakeLeader records the batches it is sent; answer decides each reply.
type fakeLeader struct {
	mu      sync.Mutex
	batches [][]string
	singles []string
	answer  func(w http.ResponseWriter, events [][]byte)
	gate    chan struct{} // if set, each batch waits for a value
}

func (l *fakeLeader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case clusterapi.PathPropose:
		l.mu.Lock()
		l.singles = append(l.singles, string(body))
		l.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case clusterapi.PathProposeBatch:
		events, err := clusterapi.DecodeBatch(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var names []string
		for _, e := range events {
			names = append(names, string(e))
		}
		l.mu.Lock()
		l.batches = append(l.batches, names)
		gate := l.gate
		l.mu.Unlock()
		if gate != nil {
			<-gate
		}
		l.answer(w, events)
	default:
		http.NotFound(w, r)
	}
}

func (l *fakeLeader) sent() (batches [][]string, singles []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]string(nil), l.batches...), append([]string(nil), l.singles...)
}

func applyAll(w http.ResponseWriter, events [][]byte) {
	res := make([]clusterapi.ProposeResult, len(events))
	for i := range res {
		res[i].Status = http.StatusNoContent
	}
	writeJSON(w, http.StatusOK, clusterapi.ProposeBatchResponse{Results: res})
}

func newForwardingNode(t *testing.T, l *fakeLeader) (*forwarder, string) {
	t.Helper()
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	n := &Node{client: srv.Client(), closed: make(chan struct{}), cfg: Config{NodeID: "follower"}}
	t.Cleanup(func() { close(n.closed) })
	return newForwarder(n), srv.URL
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestWritesThatWaitGoTogether(t *testing.T) {
	l := &fakeLeader{answer: applyAll, gate: make(chan struct{})}
	f, api := newForwardingNode(t, l)
	errs := make(chan error, 11)
	go func() { errs <- f.propose(ctxFor(t, 5*time.Second), api, []byte("first")) }()
	eventually(t, "the first batch is on its way", func() bool { b, _ := l.sent(); return len(b) == 1 })
	for i := 0; i < 10; i++ {
		go func() { errs <- f.propose(ctxFor(t, 5*time.Second), api, []byte("next")) }()
	}
	eventually(t, "ten writes wait", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.queues[api] != nil && len(f.queues[api].waiting) == 10
	})
	l.gate <- struct{}{}
	l.gate <- struct{}{}
	for i := 0; i < 11; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	batches, singles := l.sent()
	if len(batches) != 2 || len(batches[1]) != 10 || len(singles) != 0 {
		t.Fatalf("batches %v, singles %v; want [first] then the ten waiting writes in one batch", batches, singles)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queues) != 0 {
		t.Errorf("queues left behind: %v", f.queues)
	}
}

// Each write of a batch is told its own outcome, as a request of its own
// would have been.
func TestEachWriteOfABatchGetsItsOwnOutcome(t *testing.T) {
	results := []clusterapi.ProposeResult{
		{Status: http.StatusNoContent},
		{Status: http.StatusServiceUnavailable, Unknown: true, Error: "timed out"},
		{Status: http.StatusServiceUnavailable, Error: "not the leader"},
		{Status: http.StatusRequestEntityTooLarge, Error: "too large"},
		{Status: http.StatusInsufficientStorage, Error: "full"},
		{Status: http.StatusBadRequest, Error: "corrupt"},
	}
	l := &fakeLeader{answer: func(w http.ResponseWriter, events [][]byte) {
		writeJSON(w, http.StatusOK, clusterapi.ProposeBatchResponse{Results: results})
	}}
	f, api := newForwardingNode(t, l)
	ws := make([]*forwarded, len(results))
	for i := range ws {
		ws[i] = &forwarded{cmd: []byte{byte(i)}, deadline: time.Now().Add(5 * time.Second), done: make(chan error, 1)}
	}
	f.forward(api, ws)
	want := []error{nil, core.ErrIndeterminate, core.ErrUnavailable, core.ErrValueTooLarge, core.ErrNoSpace, nil}
	for i, w := range ws {
		err := <-w.done
		switch {
		case want[i] == nil && i == 0 && err != nil:
			t.Errorf("write %d: %v, want applied", i, err)
		case want[i] != nil && !errors.Is(err, want[i]):
			t.Errorf("write %d: %v, want %v", i, err, want[i])
		case i == 5 && (err == nil || retryable(err) || errors.Is(err, core.ErrIndeterminate)):
			t.Errorf("write %d: %v, want a failure that is neither retried nor unknown", i, err)
		}
	}
}

// A batch that fails as a whole leaves its writes indeterminate, unless
// the leader says that it applied none of them.
func TestAFailedBatchIsIndeterminateUnlessNothingWasApplied(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(w http.ResponseWriter, events [][]byte)
		want   error
	}{
		{"shed before reading", func(w http.ResponseWriter, _ [][]byte) {
			w.Header().Set(outcomeHeader, keyapi.OutcomeNotApplied)
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}, core.ErrUnavailable},
		{"a 503 that does not say", func(w http.ResponseWriter, _ [][]byte) {
			http.Error(w, "upstream reset", http.StatusServiceUnavailable)
		}, core.ErrIndeterminate},
		{"a 400 that does not say", func(w http.ResponseWriter, _ [][]byte) {
			http.Error(w, "bad", http.StatusBadRequest)
		}, core.ErrIndeterminate},
		{"outcome unknown", func(w http.ResponseWriter, _ [][]byte) {
			w.Header().Set(outcomeHeader, keyapi.OutcomeUnknown)
			http.Error(w, "timed out", http.StatusServiceUnavailable)
		}, core.ErrIndeterminate},
		{"connection cut", func(w http.ResponseWriter, _ [][]byte) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}, core.ErrIndeterminate},
		{"results missing", func(w http.ResponseWriter, _ [][]byte) {
			writeJSON(w, http.StatusOK, clusterapi.ProposeBatchResponse{Results: []clusterapi.ProposeResult{{Status: http.StatusNoContent}}})
		}, core.ErrIndeterminate},
		{"not JSON", func(w http.ResponseWriter, _ [][]byte) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "<html>")
		}, core.ErrIndeterminate},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, api := newForwardingNode(t, &fakeLeader{answer: c.answer})
			ws := []*forwarded{
				{cmd: []byte("a"), deadline: time.Now().Add(5 * time.Second), done: make(chan error, 1)},
				{cmd: []byte("b"), deadline: time.Now().Add(5 * time.Second), done: make(chan error, 1)},
			}
			f.forward(api, ws)
			for i, w := range ws {
				if err := <-w.done; !errors.Is(err, c.want) {
					t.Errorf("write %d: %v, want %v", i, err, c.want)
				}
			}
		})
	}
}

// A write whose client gives up while it waits was never sent: it is
// certainly not applied. One that was sent is unknown.
func TestAWriteGivenUpOnIsUnsentOrUnknown(t *testing.T) {
	l := &fakeLeader{answer: applyAll, gate: make(chan struct{})}
	f, api := newForwardingNode(t, l)
	first := make(chan error, 1)
	go func() { first <- f.propose(ctxFor(t, 300*time.Millisecond), api, []byte("sent")) }()
	eventually(t, "the first batch is on its way", func() bool { b, _ := l.sent(); return len(b) == 1 })
	err := f.propose(ctxFor(t, 100*time.Millisecond), api, []byte("waiting"))
	if !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("a write that never left: %v, want %v (not applied)", err, core.ErrUnavailable)
	}
	if err := <-first; !errors.Is(err, core.ErrIndeterminate) {
		t.Errorf("a write on its way when its client gave up: %v, want %v", err, core.ErrIndeterminate)
	}
	l.gate <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	if batches, _ := l.sent(); len(batches) != 1 {
		t.Errorf("batches %v: the write given up on was sent after all", batches)
	}
}

// A leader of an older version, without batches, gets one request per
// write, and is not asked for a batch again for a while; so does a leader
// that refuses a batch's shape, saying that it applied none of it.
func TestAnOlderLeaderGetsOneRequestPerWrite(t *testing.T) {
	for name, refuse := range map[string]func(w http.ResponseWriter, _ [][]byte){
		"no such path": func(w http.ResponseWriter, _ [][]byte) { http.NotFound(w, nil) },
		"refused whole": func(w http.ResponseWriter, _ [][]byte) {
			w.Header().Set(outcomeHeader, keyapi.OutcomeNotApplied)
			http.Error(w, "batch: more than 512 events", http.StatusBadRequest)
		},
	} {
		t.Run(name, func(t *testing.T) {
			l := &fakeLeader{answer: refuse}
			f, api := newForwardingNode(t, l)
			for _, v := range []string{"a", "b"} {
				if err := f.propose(ctxFor(t, 5*time.Second), api, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			batches, singles := l.sent()
			if len(batches) != 1 || len(singles) != 2 {
				t.Errorf("batches %v, singles %v: want one batch refused, then each write on its own", batches, singles)
			}
		})
	}
}

// A write whose deadline passed while it waited is not sent, and its
// client is told that it was not applied.
func TestAnExpiredWriteIsNotSent(t *testing.T) {
	l := &fakeLeader{answer: applyAll}
	f, api := newForwardingNode(t, l)
	q := &forwardQueue{inFlight: 1}
	expired := &forwarded{cmd: []byte("late"), deadline: time.Now().Add(-time.Millisecond), done: make(chan error, 1)}
	live := &forwarded{cmd: []byte("live"), deadline: time.Now().Add(5 * time.Second), done: make(chan error, 1)}
	q.waiting = []*forwarded{expired, live}
	f.queues[api] = q
	f.send(api, q)
	if err := <-expired.done; !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("expired write: %v, want %v", err, core.ErrUnavailable)
	}
	if err := <-live.done; err != nil {
		t.Errorf("live write: %v", err)
	}
	if batches, _ := l.sent(); len(batches) != 1 || len(batches[0]) != 1 || batches[0][0] != "live" {
		t.Errorf("batches %v, want [[live]]", batches)
	}
}
