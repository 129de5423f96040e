package txlog

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// simOpts keeps simulated segments small: several pages, several segments.
var simOpts = Options{SegmentBytes: 4 * pageBytes}

// entryT is entry i as written in term: sizes vary so that records
// straddle page boundaries at many different offsets.
func entryT(i, term uint64) *raft.Log {
	data := bytes.Repeat([]byte{byte('a' + i%26)}, 60+int(i*37%250))
	copy(data, fmt.Sprintf("v%d.%d|", i, term))
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: data, AppendedAt: time.Unix(0, int64(i*1000+term))}
}

func sameEntry(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

func batchT(from, to, term uint64) []*raft.Log {
	var b []*raft.Log
	for i := from; i <= to; i++ {
		b = append(b, entryT(i, term))
	}
	return b
}

// model is what a crash must preserve: every entry acknowledged and not
// deleted since, every stable value acknowledged, and no file a finished
// deletion removed. An entry recovered may also be any version written at
// its index that no finished deletion removed.
type model struct {
	written map[uint64]map[uint64]bool // index → terms written there
	dead    map[[2]uint64]bool         // {index, term} a finished deletion removed
	acked   map[uint64]uint64          // index → term acknowledged
	// deleting is the range of a deletion a crash interrupted: its
	// acknowledged entries may be gone.
	deleting [2]uint64
	stable   map[string]*stableValues
	removed  map[string]bool // segment files a finished deletion removed
}

// stableValues are the values a stable key may hold after a crash.
type stableValues struct {
	acked    []byte // nil: none was acknowledged
	inflight []byte // a Set a crash interrupted, or nil
}

func newModel() *model {
	return &model{written: map[uint64]map[uint64]bool{}, dead: map[[2]uint64]bool{}, acked: map[uint64]uint64{}, stable: map[string]*stableValues{}, removed: map[string]bool{}}
}

// crashRun runs a workload against a log on a simulated disk and keeps
// the model up to date with what each call that returned promised.
type crashRun struct {
	fs   *simFS
	l    *Log
	m    *model
	opts Options
}

func (r *crashRun) written(logs []*raft.Log) {
	for _, e := range logs {
		if r.m.written[e.Index] == nil {
			r.m.written[e.Index] = map[uint64]bool{}
		}
		r.m.written[e.Index][e.Term] = true
	}
}

func (r *crashRun) store(from, to, term uint64) error {
	for i := from; i <= to; i += 7 {
		b := batchT(i, min(i+6, to), term)
		r.written(b)
		if err := r.l.StoreLogs(b); err != nil {
			return err
		}
		for _, e := range b {
			r.m.acked[e.Index] = e.Term
		}
	}
	return nil
}

// appendOnly writes entries and does not wait for them to be durable.
func (r *crashRun) appendOnly(from, to, term uint64) error {
	b := batchT(from, to, term)
	r.written(b)
	_, err := r.l.Append(b)
	return err
}

func (r *crashRun) deleteRange(lo, hi uint64) error {
	before := r.fs.segmentPaths(simDir)
	r.m.deleting = [2]uint64{lo, hi}
	if err := r.l.DeleteRange(lo, hi); err != nil {
		return err
	}
	r.m.deleting = [2]uint64{}
	for i := lo; i <= hi; i++ {
		for term := range r.m.written[i] {
			r.m.dead[[2]uint64{i, term}] = true
		}
		delete(r.m.acked, i)
	}
	after := map[string]bool{}
	for _, p := range r.fs.segmentPaths(simDir) {
		after[p] = true
	}
	for _, p := range before {
		if !after[p] {
			r.m.removed[p] = true
		}
	}
	return nil
}

// acceptAll records that everything the log holds now is acknowledged:
// after Close returned, or after Open served it (raft takes what it finds
// at start as stored).
func (r *crashRun) acceptAll(l *Log) error {
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	for i := first; i <= last && last > 0; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			return err
		}
		r.m.acked[i] = e.Term
	}
	return nil
}

func (r *crashRun) close() error {
	if err := r.l.Close(); err != nil {
		return err
	}
	// Close syncs what was written and not yet acknowledged.
	for i, terms := range r.m.written {
		for term := range terms {
			if !r.m.dead[[2]uint64{i, term}] && term >= r.m.acked[i] {
				r.m.acked[i] = term
			}
		}
	}
	l, err := open(r.fs, simDir, r.opts)
	if err != nil {
		return err
	}
	r.l = l
	return r.acceptAll(l)
}

// kill is the process dying with the machine up; the log is opened again.
func (r *crashRun) kill() error {
	r.fs.kill()
	l, err := open(r.fs, simDir, r.opts)
	if err != nil {
		return err
	}
	r.l = l
	return r.acceptAll(l)
}

func (r *crashRun) set(key, val string) error {
	v := r.m.stable[key]
	if v == nil {
		v = &stableValues{}
		r.m.stable[key] = v
	}
	v.inflight = []byte(val)
	if err := r.l.Set([]byte(key), []byte(val)); err != nil {
		return err
	}
	v.acked, v.inflight = v.inflight, nil
	return nil
}

// check opens the log on a disk after a power cut and checks it against
// the model; it returns the log for more checks, or an error.
func (m *model) check(fsys *simFS, opts Options) error {
	for p := range m.removed {
		if fsys.exists(p) {
			return fmt.Errorf("%s, removed by a deletion that returned, is back", p)
		}
	}
	l, err := open(fsys, simDir, opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer l.Close()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	for i, term := range m.acked {
		if i >= m.deleting[0] && i <= m.deleting[1] {
			continue
		}
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			return fmt.Errorf("acknowledged entry %d (term %d) is gone: log is %d..%d: %v", i, term, first, last, err)
		}
		if !sameEntry(&e, entryT(i, term)) {
			return fmt.Errorf("acknowledged entry %d is term %d, not %d", i, e.Term, term)
		}
	}
	var prev uint64
	for i := first; i <= last && last > 0; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			return fmt.Errorf("entry %d of %d..%d: %v", i, first, last, err)
		}
		if !m.written[i][e.Term] || !sameEntry(&e, entryT(i, e.Term)) {
			return fmt.Errorf("entry %d (term %d) was never written", i, e.Term)
		}
		if m.dead[[2]uint64{i, e.Term}] {
			return fmt.Errorf("entry %d (term %d), deleted by a deletion that returned, is back", i, e.Term)
		}
		if e.Term < prev {
			return fmt.Errorf("entry %d has term %d after term %d", i, e.Term, prev)
		}
		prev = e.Term
	}
	for k, want := range m.stable {
		v, err := l.Get([]byte(k))
		switch {
		case err != nil && want.acked != nil:
			return fmt.Errorf("stable %s: %v, want %q", k, err, want.acked)
		case err == nil && !bytes.Equal(v, want.acked) && !bytes.Equal(v, want.inflight):
			return fmt.Errorf("stable %s = %q, want %q (or %q, in flight)", k, v, want.acked, want.inflight)
		}
	}
	// And the log goes on: an append after recovery survives a restart.
	next := last + 1
	if err := l.StoreLogs([]*raft.Log{entryT(next, 1000)}); err != nil {
		return fmt.Errorf("append after recovery: %w", err)
	}
	if err := l.Close(); err != nil {
		return err
	}
	l, err = open(fsys, simDir, opts)
	if err != nil {
		return fmt.Errorf("open after an append after recovery: %w", err)
	}
	defer l.Close()
	var e raft.Log
	if err := l.GetLog(next, &e); err != nil || e.Term != 1000 {
		return fmt.Errorf("the append after recovery is gone: %v", err)
	}
	return nil
}

type workload struct {
	name string
	run  func(r *crashRun) error
}

func steps(r *crashRun, fs ...func() error) error {
	for _, f := range fs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

var workloads = []workload{
	{"appends across segments", func(r *crashRun) error {
		return r.store(1, 90, 1)
	}},
	{"unacknowledged appends, process killed", func(r *crashRun) error {
		return steps(r,
			func() error { return r.store(1, 20, 1) },
			func() error { return r.appendOnly(21, 40, 1) },
			r.kill,
			func() error { return r.appendOnly(41, 45, 1) },
			r.kill,
			func() error { return r.store(46, 60, 1) },
		)
	}},
	{"close syncs", func(r *crashRun) error {
		return steps(r,
			func() error { return r.store(1, 10, 1) },
			func() error { return r.appendOnly(11, 25, 1) },
			r.close,
			func() error { return r.store(26, 30, 1) },
		)
	}},
	{"suffix deletions", func(r *crashRun) error {
		return steps(r,
			func() error { return r.store(1, 100, 1) },
			func() error { return r.appendOnly(101, 106, 1) },
			// Inside the last segment, below its durable mark, with
			// unsynced records before the cut.
			func() error { return r.deleteRange(104, 106) },
			func() error { return r.store(104, 115, 2) },
			// In an earlier segment: whole segments go.
			func() error { return r.deleteRange(30, 115) },
			func() error { return r.store(30, 40, 3) },
		)
	}},
	{"prefix compaction", func(r *crashRun) error {
		return steps(r,
			func() error { return r.store(1, 120, 1) },
			func() error { return r.deleteRange(1, 80) },
			func() error { return r.store(121, 130, 1) },
			func() error { return r.deleteRange(1, 125) },
			func() error { return r.store(131, 135, 1) },
		)
	}},
	{"delete all, start again below and above", func(r *crashRun) error {
		return steps(r,
			func() error { return r.store(1, 60, 1) },
			func() error { return r.deleteRange(1, 60) },
			func() error { return r.store(10, 20, 2) },
			func() error { return r.deleteRange(10, 20) },
			func() error { return r.store(500, 510, 3) },
		)
	}},
	{"stable state", func(r *crashRun) error {
		return steps(r,
			func() error { return r.set("vote", "a") },
			func() error { return r.store(1, 5, 1) },
			func() error { return r.set("vote", "b") },
			func() error { return r.set("term", "7") },
			func() error { return r.set("vote", "c") },
		)
	}},
}

// TestCrashAtEverySync cuts the power at every sync of each workload (the
// sync never completes) and after its last, tears the unsynced state with
// every cut policy, and opens the log: it must open, with every
// acknowledged entry and stable value, and nothing deleted or never
// written. Making any one sync of the log a no-op fails this test, or one
// named in the package doc.
func TestCrashAtEverySync(t *testing.T) {
	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			// A dry run counts the syncs.
			dry := &crashRun{fs: newSimFS(), m: newModel(), opts: simOpts}
			dry.l = openSim(t, dry.fs, simOpts)
			if err := w.run(dry); err != nil {
				t.Fatalf("workload without a crash: %v", err)
			}
			n := dry.fs.syncs
			failures := 0
			for k := 1; k <= n+1; k++ {
				r := &crashRun{fs: newSimFS(), m: newModel(), opts: simOpts}
				var snap *simFS
				var live []string
				syncs := 0
				r.fs.beforeSync = func(string) error {
					if snap != nil {
						return errPowerCut
					}
					syncs++
					if syncs == k {
						snap, live = r.fs.clone(), r.fs.segmentPaths(simDir)
						return errPowerCut
					}
					return nil
				}
				l, err := open(r.fs, simDir, simOpts)
				if err == nil {
					r.l = l
					err = w.run(r)
				}
				if snap == nil {
					if err != nil {
						t.Fatalf("crash point %d: the workload failed without a crash: %v", k, err)
					}
					snap, live = r.fs.clone(), r.fs.segmentPaths(simDir)
				}
				for _, p := range live {
					delete(r.m.removed, p) // created again since
				}
				for _, p := range cutPolicies() {
					img := snap.clone()
					img.powerCut(p)
					if err := r.m.check(img, simOpts); err != nil {
						t.Errorf("power cut at sync %d of %d, %s: %v", k, n, p.name, err)
						if failures++; failures > 10 {
							t.FailNow()
						}
					}
				}
			}
		})
	}
}
