package cluster

import (
	"context"
	"sync"
	"time"
)

// batcher shares one call of fn among every caller that arrives while a
// call runs: N concurrent linearizable reads cost one quorum round (on the
// leader) or one request to the leader (on a follower), not N.
type batcher struct {
	fn func(ctx context.Context) (uint64, error)

	mu      sync.Mutex
	pending *round
	running bool
}

type round struct {
	done  chan struct{}
	index uint64
	err   error
}

func newBatcher(fn func(ctx context.Context) (uint64, error)) *batcher { return &batcher{fn: fn} }

// confirm joins the next round and returns its result.
func (b *batcher) confirm(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	if b.pending == nil {
		b.pending = &round{done: make(chan struct{})}
	}
	r := b.pending
	if !b.running {
		b.running = true
		go b.loop()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *batcher) loop() {
	for {
		b.mu.Lock()
		r := b.pending
		b.pending = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// Every caller of this round arrived before fn starts, so fn's index
		// covers every write committed before any of them called.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.index, r.err = b.fn(ctx)
		cancel()
		close(r.done)
	}
}
