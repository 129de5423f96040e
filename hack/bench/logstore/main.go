// Command logstore compares the kvnode transaction log with
// hashicorp/raft-wal and hashicorp/raft-boltdb as raft log stores, in one
// run, on the same disk, all with fsync on: each store gets the same
// sequence of StoreLogs calls (raft's only write path) with 128-byte
// commands, one batch size per row. It lives in its own module so that the
// comparison libraries never become dependencies of the product.
//
//	cd hack/bench && go run ./logstore -dir /var/tmp -entries 4000
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
	wal "github.com/hashicorp/raft-wal"

	"github.com/kvstore-operator/kvstore-operator/kvnode/txlog"
)

type store interface {
	raft.LogStore
}

type contender struct {
	name string
	open func(dir string) (store, func(), error)
}

var contenders = []contender{
	{"kvnode txlog", func(dir string) (store, func(), error) {
		l, err := txlog.Open(dir, txlog.Options{})
		if err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	}},
	{"hashicorp/raft-wal", func(dir string) (store, func(), error) {
		w, err := wal.Open(dir)
		if err != nil {
			return nil, nil, err
		}
		return w, func() { w.Close() }, nil
	}},
	{"hashicorp/raft-boltdb", func(dir string) (store, func(), error) {
		b, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		if err != nil {
			return nil, nil, err
		}
		return b, func() { b.Close() }, nil
	}},
}

func main() {
	base := flag.String("dir", os.TempDir(), "directory on the disk to measure (not a tmpfs)")
	entries := flag.Int("entries", 4000, "entries written per row")
	rounds := flag.Int("rounds", 3, "rounds; contenders alternate within each round and the best round is kept")
	flag.Parse()
	payload := bytes.Repeat([]byte("x"), 128)
	batches := []int{1, 16, 256}
	const concurrent = -32 // a row key: 32 writers of one entry each

	best := map[string]map[int]float64{}
	for r := 0; r < *rounds; r++ {
		for _, b := range append(batches, concurrent) {
			for _, c := range contenders {
				rate, err := measure(*base, c, b, *entries, payload)
				if err != nil {
					log.Fatalf("%s: %v", c.name, err)
				}
				if best[c.name] == nil {
					best[c.name] = map[int]float64{}
				}
				best[c.name][b] = max(best[c.name][b], rate)
			}
		}
	}
	fmt.Printf("StoreLogs with fsync, 128-byte commands, %d entries per row, best of %d alternating rounds (entries/s):\n\n", *entries, *rounds)
	fmt.Print("| batch size |")
	for _, c := range contenders {
		fmt.Printf(" %s |", c.name)
	}
	fmt.Println(" txlog / raft-wal | txlog / raft-boltdb |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, b := range append(batches, concurrent) {
		if b == concurrent {
			fmt.Printf("| %d concurrent writers, 1 entry each |", -b)
		} else {
			fmt.Printf("| %d |", b)
		}
		for _, c := range contenders {
			fmt.Printf(" %.0f |", best[c.name][b])
		}
		t := best[contenders[0].name][b]
		fmt.Printf(" %.2f× | %.1f× |\n", t/best[contenders[1].name][b], t/best[contenders[2].name][b])
	}
}

func measure(base string, c contender, batch, entries int, payload []byte) (float64, error) {
	dir, err := os.MkdirTemp(base, "logstore-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	s, closeFn, err := c.open(dir)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	if batch < 0 {
		return concurrentWriters(s, -batch, entries, payload)
	}
	logs := make([]*raft.Log, batch)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: payload, AppendedAt: time.Now()}
	}
	index := uint64(1)
	start := time.Now()
	for written := 0; written < entries; written += batch {
		for _, l := range logs {
			l.Index = index
			index++
		}
		if err := s.StoreLogs(logs); err != nil {
			return 0, err
		}
	}
	return float64(index-1) / time.Since(start).Seconds(), nil
}

// concurrentWriters is what a store sees under a busy node: many writers,
// each appending one entry and waiting until it is durable. Indexes must
// reach a log store in order, so every writer passes a sequencer. Stores
// whose only write call is the blocking StoreLogs hold the sequencer
// through the fsync; txlog's Append lets a writer leave it before waiting,
// so the waits share fdatasyncs (group commit).
func concurrentWriters(s store, writers, entries int, payload []byte) (float64, error) {
	var seq sync.Mutex
	next := uint64(1)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < entries/writers; i++ {
				seq.Lock()
				l := &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: payload, AppendedAt: time.Now()}
				next++
				var err error
				if tl, ok := s.(*txlog.Log); ok {
					var c txlog.Commit
					c, err = tl.Append([]*raft.Log{l})
					seq.Unlock()
					if err == nil {
						err = c.Wait()
					}
				} else {
					err = s.StoreLogs([]*raft.Log{l})
					seq.Unlock()
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(next-1) / time.Since(start).Seconds(), firstErr
}
