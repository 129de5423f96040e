package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
)

// A follower forwards the writes its clients make to the leader. One HTTP
// request per write made forwarding cost the leader more than the write
// itself (parsing, a response, a connection per write in flight), so the
// writes that wait while others are on their way go together in one
// request to clusterapi.PathProposeBatch, and the leader applies each on
// its own.
//
// What a client is told stays what it would be told for a request of its
// own:
//   - A write still queued when its client gives up was never sent: it is
//     taken out of the queue and certainly not applied.
//   - A write sent is settled by its own result in the leader's answer. A
//     batch that fails as a whole leaves each of its writes indeterminate
//     (core.ErrIndeterminate), unless the leader was not reached at all or
//     answered before applying any (a refused dial, a 503 without
//     keyapi.HeaderOutcome, a leader that has no such path).
//   - A client that gives up while its write is on its way is told that
//     the outcome is unknown, as it would be if it had been the only one.
//
// TestForwardedBatches (and the linearizability test, whose clients write
// through every member) would catch a write reported with the wrong
// outcome.
const (
	// forwardsInFlight bounds the batches on their way to one leader: the
	// writes that arrive while one is on its way go in the next. One
	// batch at a time gave the largest batches and the most writes per
	// second of CPU in the benchmark (docs/benchmarks.md), with the same
	// p99 as two; a write waits for at most the batch ahead of it.
	forwardsInFlight = 1
	// batchUnsupportedFor is how long a leader that answered 404 to a
	// batch (an older kvnode, during an upgrade) gets one request per
	// write.
	batchUnsupportedFor = time.Minute
	// batchesServedAtOnce bounds what a leader applies of batches at once:
	// at most this many bodies of clusterapi.MaxBatchBytes, and this many
	// times clusterapi.MaxBatchEvents goroutines. Followers send one batch
	// at a time each.
	batchesServedAtOnce = 16
)

// forwarder queues a follower's writes to the leader.
type forwarder struct {
	n      *Node
	mu     sync.Mutex
	queues map[string]*forwardQueue // by leader API URL
	// unsupported holds, per leader API URL, until when it is sent one
	// request per write.
	unsupported map[string]time.Time
}

type forwardQueue struct {
	waiting  []*forwarded
	inFlight int
}

// forwarded is one write waiting for its outcome.
type forwarded struct {
	cmd      []byte
	deadline time.Time
	sent     bool       // guarded by forwarder.mu
	done     chan error // buffered: the sender never waits for the client
}

func newForwarder(n *Node) *forwarder {
	return &forwarder{n: n, queues: map[string]*forwardQueue{}, unsupported: map[string]time.Time{}}
}

// propose forwards cmd to the leader at api and waits for its outcome.
func (f *forwarder) propose(ctx context.Context, api string, cmd []byte) error {
	if len(cmd) > clusterapi.MaxBatchEventBytes || f.batchUnsupported(api) {
		return f.n.forwardPropose(ctx, api, cmd)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	w := &forwarded{cmd: cmd, deadline: deadline, done: make(chan error, 1)}
	f.mu.Lock()
	q := f.queues[api]
	if q == nil {
		q = &forwardQueue{}
		f.queues[api] = q
	}
	q.waiting = append(q.waiting, w)
	if q.inFlight < forwardsInFlight {
		q.inFlight++
		go f.send(api, q)
	}
	f.mu.Unlock()

	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
	case <-f.n.closed:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !w.sent {
		for i, o := range q.waiting {
			if o == w {
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				break
			}
		}
		return fmt.Errorf("%w: the write was still waiting to be sent to the leader", core.ErrUnavailable)
	}
	select {
	case err := <-w.done:
		return err
	default:
		return fmt.Errorf("%w: gave up waiting for the leader: %v", core.ErrIndeterminate, context.Cause(ctx))
	}
}

func (f *forwarder) batchUnsupported(api string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	until, ok := f.unsupported[api]
	if ok && time.Now().After(until) {
		delete(f.unsupported, api)
		return false
	}
	return ok
}

// send sends q's waiting writes in batches until none is left.
func (f *forwarder) send(api string, q *forwardQueue) {
	for {
		f.mu.Lock()
		batch, size := 0, 0
		for batch < len(q.waiting) && batch < clusterapi.MaxBatchEvents {
			next := len(q.waiting[batch].cmd) + 10 // its length's uvarint
			if batch > 0 && size+next > clusterapi.MaxBatchBytes {
				break
			}
			size += next
			batch++
		}
		if batch == 0 {
			q.inFlight--
			if q.inFlight == 0 && f.queues[api] == q {
				delete(f.queues, api)
			}
			f.mu.Unlock()
			return
		}
		ws := make([]*forwarded, 0, batch)
		now := time.Now()
		for _, w := range q.waiting[:batch] {
			// A write past its deadline is not sent: its client is
			// told, truly, that it was not applied.
			if !now.Before(w.deadline) {
				w.done <- fmt.Errorf("%w: the deadline passed before the write was sent to the leader", core.ErrUnavailable)
				continue
			}
			w.sent = true
			ws = append(ws, w)
		}
		q.waiting = slices.Delete(q.waiting, 0, batch)
		f.mu.Unlock()
		if len(ws) > 0 {
			f.forward(api, ws)
		}
	}
}

// forward sends one batch and hands each write its outcome.
func (f *forwarder) forward(api string, ws []*forwarded) {
	deadline := ws[0].deadline
	cmds := make([][]byte, len(ws))
	for i, w := range ws {
		cmds[i] = w.cmd
		if w.deadline.After(deadline) {
			deadline = w.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-f.n.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	errs := f.n.forwardBatch(ctx, api, cmds)
	if errs == nil {
		// The leader does not know batches: nothing of this one was
		// applied, and each write goes on its own.
		f.mu.Lock()
		f.unsupported[api] = time.Now().Add(batchUnsupportedFor)
		f.mu.Unlock()
		errs = make([]error, len(ws))
		var wg sync.WaitGroup
		for i, w := range ws {
			wg.Go(func() {
				wctx, wcancel := context.WithDeadline(ctx, w.deadline)
				defer wcancel()
				errs[i] = f.n.forwardPropose(wctx, api, w.cmd)
			})
		}
		wg.Wait()
	}
	for i, w := range ws {
		w.done <- errs[i]
	}
}

// forwardBatch posts cmds to the leader at api as one batch and returns
// each one's outcome, or nil if the leader did not take the batch and
// applied none of it (an older leader without batches, or one that
// refused its shape): each goes on its own then.
func (n *Node) forwardBatch(ctx context.Context, api string, cmds [][]byte) []error {
	all := func(err error) []error {
		errs := make([]error, len(cmds))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+clusterapi.PathProposeBatch, bytes.NewReader(clusterapi.EncodeBatch(cmds)))
	if err != nil {
		return all(err)
	}
	req.Header.Set(forwardHeader, n.cfg.NodeID)
	resp, err := n.client.Do(req)
	if err != nil {
		if isDialError(err) {
			return all(fmt.Errorf("%w: leader unreachable: %v", core.ErrUnavailable, err))
		}
		return all(fmt.Errorf("%w: forwarding to the leader: %v", core.ErrIndeterminate, err))
	}
	defer resp.Body.Close()
	defer drainBody(resp.Body)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(body))
		notApplied := resp.Header.Get(outcomeHeader) == keyapi.OutcomeNotApplied
		switch {
		// A leader without the path (an older kvnode) answers from its
		// router, before any handler runs.
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
			return nil
		// Shed, or too busy with batches: not applied, and worth trying
		// again once the leader has room.
		case notApplied && resp.StatusCode == http.StatusServiceUnavailable:
			return all(fmt.Errorf("%w: leader: %s", core.ErrUnavailable, msg))
		// Refused whole for its shape (the two sides' bounds differ):
		// not applied; each write goes on its own, as to an older leader.
		case notApplied:
			return nil
		}
		// Anything else may come from between the two (a proxy that gave
		// up after passing the batch on): each write may have been applied.
		return all(fmt.Errorf("%w: the leader answered a batch of %d writes with %d: %s", core.ErrIndeterminate, len(cmds), resp.StatusCode, msg))
	}
	var out clusterapi.ProposeBatchResponse
	// A result is a status and a reason of a few hundred bytes at most.
	if err := json.NewDecoder(io.LimitReader(resp.Body, int64(len(cmds))*8192+1024)).Decode(&out); err != nil || len(out.Results) != len(cmds) {
		return all(fmt.Errorf("%w: the leader's answer to a batch of %d writes could not be read (%d results, %v)", core.ErrIndeterminate, len(cmds), len(out.Results), err))
	}
	errs := make([]error, len(cmds))
	for i, r := range out.Results {
		errs[i] = forwardedError(r.Status, r.Unknown, r.Error)
	}
	return errs
}
