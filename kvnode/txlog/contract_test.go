package txlog

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// store is what the contract asks of a transaction log: raft's two ports.
type store interface {
	raft.LogStore
	raft.StableStore
}

// implementations lists every transaction log the node can run on. Each
// must pass the same contract; reopen returns the same store after a
// restart (the in-memory one cannot restart, so it returns nil).
var implementations = []struct {
	name   string
	open   func(t *testing.T) store
	reopen func(t *testing.T, s store) store
}{
	{
		name: "file",
		open: func(t *testing.T) store { return openFile(t, t.TempDir(), Options{SegmentBytes: 4096}) },
		reopen: func(t *testing.T, s store) store {
			l := s.(*Log)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			return openFile(t, l.dir, l.opts)
		},
	},
	{
		// The same log on the simulated disk the crash tests use, so that
		// its behaviour with no crash is known to match the real one.
		name: "file on a simulated disk",
		open: func(t *testing.T) store {
			l := openSim(t, newSimFS(), Options{SegmentBytes: 4096})
			t.Cleanup(func() { l.Close() })
			return l
		},
		reopen: func(t *testing.T, s store) store {
			l := s.(*Log)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openSim(t, l.fs.(*simFS), l.opts)
			t.Cleanup(func() { l.Close() })
			return l
		},
	},
	{
		name:   "inmem",
		open:   func(*testing.T) store { return raft.NewInmemStore() },
		reopen: func(*testing.T, store) store { return nil },
	},
}

func openFile(t *testing.T, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1 + i/10, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("value-%d\n\t with spaces \x00 and zero", i)), Extensions: []byte{byte(i)}, AppendedAt: time.Unix(0, int64(i)*1000)}
}

func appendRange(t *testing.T, s store, from, to uint64) {
	t.Helper()
	var batch []*raft.Log
	for i := from; i <= to; i++ {
		batch = append(batch, entry(i))
		if len(batch) == 7 || i == to {
			if err := s.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

func assertRange(t *testing.T, s store, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("range = %d..%d, want %d..%d", f, l, first, last)
	}
	if last == 0 {
		return
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		want := entry(i)
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, got, want)
		}
	}
	var out raft.Log
	if err := s.GetLog(first-1, &out); first > 1 && !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(first-1) = %v, want ErrLogNotFound", err)
	}
	if err := s.GetLog(last+1, &out); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(last+1) = %v, want ErrLogNotFound", err)
	}
}

// forEach runs the contract check against every implementation, and again
// after a restart for those that persist.
func forEach(t *testing.T, run func(t *testing.T, s store, restart func(store) store)) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			s := impl.open(t)
			run(t, s, func(s store) store {
				if r := impl.reopen(t, s); r != nil {
					return r
				}
				return s
			})
		})
	}
}

func TestContractEmpty(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		assertRange(t, s, 0, 0)
		var out raft.Log
		if err := s.GetLog(1, &out); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog on empty = %v", err)
		}
		assertRange(t, restart(s), 0, 0)
	})
}

func TestContractAppendAndRead(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		if err := s.StoreLog(entry(1)); err != nil {
			t.Fatal(err)
		}
		appendRange(t, s, 2, 200) // several 4 KiB segments for the file log
		assertRange(t, s, 1, 200)
		s = restart(s)
		assertRange(t, s, 1, 200)
		appendRange(t, s, 201, 230)
		assertRange(t, s, 1, 230)
	})
}

func TestContractCompactPrefix(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		appendRange(t, s, 1, 300)
		if err := s.DeleteRange(1, 250); err != nil {
			t.Fatal(err)
		}
		assertRange(t, s, 251, 300)
		s = restart(s)
		assertRange(t, s, 251, 300)
		appendRange(t, s, 301, 310)
		assertRange(t, s, 251, 310)
	})
}

func TestContractTruncateSuffix(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		appendRange(t, s, 1, 120)
		if err := s.DeleteRange(60, 120); err != nil {
			t.Fatal(err)
		}
		assertRange(t, s, 1, 59)
		appendRange(t, s, 60, 80) // the leader's entries replace the dropped ones
		assertRange(t, s, 1, 80)
		s = restart(s)
		assertRange(t, s, 1, 80)
	})
}

func TestContractDeleteAllThenStartElsewhere(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		appendRange(t, s, 1, 50)
		if err := s.DeleteRange(1, 50); err != nil {
			t.Fatal(err)
		}
		assertRange(t, s, 0, 0)
		// After a snapshot install the log restarts past the snapshot.
		appendRange(t, s, 1000, 1010)
		assertRange(t, s, 1000, 1010)
		s = restart(s)
		assertRange(t, s, 1000, 1010)
		// A follower whose whole log conflicts with the leader's deletes
		// it and starts again lower.
		if err := s.DeleteRange(1000, 1010); err != nil {
			t.Fatal(err)
		}
		appendRange(t, s, 5, 12)
		assertRange(t, s, 5, 12)
		s = restart(s)
		assertRange(t, s, 5, 12)
	})
}

func TestContractStable(t *testing.T) {
	forEach(t, func(t *testing.T, s store, restart func(store) store) {
		if _, err := s.Get([]byte("missing")); err == nil || err.Error() != "not found" {
			t.Fatalf("Get(missing) = %v, want an error saying not found (raft compares the text)", err)
		}
		if v, err := s.GetUint64([]byte("missing")); err != nil || v != 0 {
			t.Fatalf("GetUint64(missing) = %d, %v", v, err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("node-\x00-1")); err != nil {
			t.Fatal(err)
		}
		if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
			t.Fatal(err)
		}
		s = restart(s)
		if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-\x00-1" {
			t.Fatalf("Get = %q, %v", v, err)
		}
		if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
			t.Fatalf("GetUint64 = %d, %v", v, err)
		}
	})
}

func TestContractConcurrentReadsDuringAppends(t *testing.T) {
	forEach(t, func(t *testing.T, s store, _ func(store) store) {
		appendRange(t, s, 1, 10)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					last, _ := s.LastIndex()
					var out raft.Log
					if err := s.GetLog(last, &out); err != nil || out.Index != last {
						t.Errorf("GetLog(%d) = %d, %v", last, out.Index, err)
						return
					}
				}
			}()
		}
		appendRange(t, s, 11, 400)
		close(stop)
		wg.Wait()
		assertRange(t, s, 1, 400)
	})
}
