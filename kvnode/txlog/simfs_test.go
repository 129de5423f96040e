package txlog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// simFS is a disk that can lose power. The program sees its writes at once
// (the page cache); a power cut keeps for sure only what a completed sync
// covered: a file's bytes and size after its Sync, a directory's creates,
// renames and removes after SyncDir. Everything else is torn the way a
// disk tears it, as a cutPolicy decides: each page written since the last
// sync independently keeps its new bytes, gets zeros or stale bytes in
// their place, or garbage; each unsynced size change and directory entry
// independently survives or not.
//
// Bytes of a page that were not written since its last sync keep their
// durable value whatever happens to the rest of the page ("powersafe
// overwrite", which the log assumes: appending after an acknowledged record
// in the same page must not damage it).
type simFS struct {
	mu    sync.Mutex
	names map[string]*simInode // the directory entries the program sees
	disk  map[string]*simInode // the directory entries a power cut keeps
	locks map[string]bool
	gen   int // bumped when the process dies: older file handles fail
	// beforeSync, if set, runs before every file and directory sync with
	// its path; an error it returns becomes the sync's, and the sync does
	// not happen.
	beforeSync func(path string) error
	// allocCap, when set, is the size past which Allocate runs out of
	// space: it grows the file to allocCap and fails with ENOSPC, as ext4
	// and XFS do.
	allocCap int64
	// noAllocate makes Allocate do nothing, as on a file system that
	// cannot preallocate; writeCap, when set, is the size past which a
	// write runs out of space, having written what fits.
	noAllocate bool
	writeCap   int64
	syncs      int // syncs that happened
}

type simInode struct {
	name    string // the path it was created at, for cut policies
	data    []byte // as the program reads it
	durable []byte // as a power cut keeps it for sure
	// dirty holds, per page, the range of offsets written (or truncated
	// away) since the last sync.
	dirty map[int64][2]int64
}

func newSimFS() *simFS {
	return &simFS{names: map[string]*simInode{}, disk: map[string]*simInode{}, locks: map[string]bool{}}
}

var errPowerCut = errors.New("simulated power cut")

const simDir = "/data/log"

func openSim(t testing.TB, fsys *simFS, opts Options) *Log {
	t.Helper()
	l, err := open(fsys, simDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func notExist(op, name string) error { return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist} }

func (s *simFS) MkdirAll(string) error { return nil }

func (s *simFS) Lock(dir string) (io.Closer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[dir] {
		return nil, fmt.Errorf("%w: %s is held by another process (or another open log in this one)", ErrLocked, dir)
	}
	s.locks[dir] = true
	return &simLock{s: s, dir: dir, gen: s.gen}, nil
}

type simLock struct {
	s   *simFS
	dir string
	gen int
}

func (l *simLock) Close() error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.gen == l.s.gen {
		delete(l.s.locks, l.dir)
	}
	return nil
}

func (s *simFS) ReadDir(dir string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.names {
		if filepath.Dir(n) == dir {
			names = append(names, filepath.Base(n))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (s *simFS) ReadFile(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[name]
	if ino == nil {
		return nil, notExist("open", name)
	}
	return append([]byte(nil), ino.data...), nil
}

func (s *simFS) Create(name string) (file, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[name]
	if ino == nil {
		ino = &simInode{name: name}
		s.names[name] = ino
	} else {
		ino.resize(0)
	}
	return &simFile{s: s, ino: ino, gen: s.gen}, nil
}

func (s *simFS) OpenRW(name string) (file, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[name]
	if ino == nil {
		return nil, notExist("open", name)
	}
	return &simFile{s: s, ino: ino, gen: s.gen}, nil
}

func (s *simFS) Rename(from, to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[from]
	if ino == nil {
		return notExist("rename", from)
	}
	s.names[to] = ino
	delete(s.names, from)
	return nil
}

func (s *simFS) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[name] == nil {
		return notExist("remove", name)
	}
	delete(s.names, name)
	return nil
}

func (s *simFS) SyncDir(dir string) error {
	if s.beforeSync != nil {
		if err := s.beforeSync(dir); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.disk {
		if filepath.Dir(n) == dir && s.names[n] == nil {
			delete(s.disk, n)
		}
	}
	for n, ino := range s.names {
		if filepath.Dir(n) == dir {
			s.disk[n] = ino
		}
	}
	s.syncs++
	return nil
}

// resize sets the size the program sees; bytes cut off count as written.
func (ino *simInode) resize(n int64) {
	if old := int64(len(ino.data)); n < old {
		ino.markDirty(n, old)
		ino.data = ino.data[:n]
		return
	}
	ino.data = append(ino.data, make([]byte, n-int64(len(ino.data)))...)
}

func (ino *simInode) markDirty(lo, hi int64) {
	if ino.dirty == nil {
		ino.dirty = map[int64][2]int64{}
	}
	for p := lo / pageBytes; p*pageBytes < hi; p++ {
		r := [2]int64{max(lo, p*pageBytes), min(hi, (p+1)*pageBytes)}
		if old, ok := ino.dirty[p]; ok {
			r = [2]int64{min(r[0], old[0]), max(r[1], old[1])}
		}
		ino.dirty[p] = r
	}
}

type simFile struct {
	s      *simFS
	ino    *simInode
	gen    int
	closed bool
}

// live is called with s.mu held.
func (f *simFile) live() error {
	if f.closed {
		return fs.ErrClosed
	}
	if f.gen != f.s.gen {
		return errPowerCut
	}
	return nil
}

func (f *simFile) ReadAt(p []byte, off int64) (int, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.live(); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *simFile) WriteAt(p []byte, off int64) (int, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.live(); err != nil {
		return 0, err
	}
	var err error
	if c := f.s.writeCap; c > 0 && off+int64(len(p)) > c {
		p, err = p[:max(0, c-off)], syscall.ENOSPC
	}
	end := off + int64(len(p))
	if end > int64(len(f.ino.data)) {
		f.ino.resize(end)
	}
	copy(f.ino.data[off:], p)
	f.ino.markDirty(off, end)
	return len(p), err
}

func (f *simFile) Truncate(n int64) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.live(); err != nil {
		return err
	}
	f.ino.resize(n)
	return nil
}

func (f *simFile) Allocate(n int64) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.live(); err != nil {
		return err
	}
	if f.s.noAllocate {
		return nil
	}
	if c := f.s.allocCap; c > 0 && n > c {
		if c > int64(len(f.ino.data)) {
			f.ino.resize(c)
		}
		return syscall.ENOSPC
	}
	if n > int64(len(f.ino.data)) {
		f.ino.resize(n)
	}
	return nil
}

func (f *simFile) Sync() error {
	if h := f.s.beforeSync; h != nil {
		if err := h(f.ino.name); err != nil {
			return err
		}
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.live(); err != nil {
		return err
	}
	f.ino.durable = append(f.ino.durable[:0:0], f.ino.data...)
	f.ino.dirty = nil
	f.s.syncs++
	return nil
}

func (f *simFile) Close() error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	f.closed = true
	return nil
}

// clone returns a copy of the disk and page cache as they are now, with no
// lock held and no hook: the state a power cut at this moment starts from.
func (s *simFS) clone() *simFS {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := newSimFS()
	copies := map[*simInode]*simInode{}
	cp := func(ino *simInode) *simInode {
		if ino == nil {
			return nil
		}
		if c, ok := copies[ino]; ok {
			return c
		}
		n := &simInode{name: ino.name, data: append([]byte(nil), ino.data...), durable: append([]byte(nil), ino.durable...)}
		if ino.dirty != nil {
			n.dirty = map[int64][2]int64{}
			for p, r := range ino.dirty {
				n.dirty[p] = r
			}
		}
		copies[ino] = n
		return n
	}
	for n, ino := range s.names {
		c.names[n] = cp(ino)
	}
	for n, ino := range s.disk {
		c.disk[n] = cp(ino)
	}
	return c
}

// kill is the process dying with the machine up: open files and locks go,
// the page cache stays.
func (s *simFS) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.locks = map[string]bool{}
}

// tear is what a power cut does to the bytes of one page written since its
// last sync.
type tear int

const (
	landed  tear = iota // the new bytes reached the disk
	zeroed              // zeros in their place
	stale               // the bytes the last sync left
	garbage             // random bytes
)

func (t tear) String() string { return [...]string{"landed", "zeroed", "stale", "garbage"}[t] }

// cutPolicy decides how a power cut tears what was not synced. Nil
// functions mean: pages stale, sizes and directory entries as last synced.
type cutPolicy struct {
	name string
	// page decides for page p of the file created at path.
	page func(path string, p int64) tear
	// size reports whether an unsynced size change of the file survives.
	size func(path string) bool
	// entry reports whether an unsynced create, rename or remove of name
	// survives; changed lists every such name, sorted.
	entry func(name string, changed []string) bool
	seed  int64 // for garbage
}

// powerCut loses power: what survives is what p decides, and the program
// that was running is gone.
func (s *simFS) powerCut(p cutPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rng := rand.New(rand.NewSource(p.seed))
	var changed []string
	seen := map[string]bool{}
	for _, m := range []map[string]*simInode{s.names, s.disk} {
		for n := range m {
			if !seen[n] && s.names[n] != s.disk[n] {
				changed = append(changed, n)
			}
			seen[n] = true
		}
	}
	sort.Strings(changed)
	names := map[string]*simInode{}
	for n, ino := range s.disk {
		names[n] = ino
	}
	for _, n := range changed {
		if p.entry != nil && p.entry(n, changed) {
			if ino := s.names[n]; ino != nil {
				names[n] = ino
			} else {
				delete(names, n)
			}
		}
	}
	done := map[*simInode]bool{}
	var inodes []*simInode
	for _, ino := range names {
		if !done[ino] {
			done[ino] = true
			inodes = append(inodes, ino)
		}
	}
	sort.Slice(inodes, func(i, j int) bool { return inodes[i].name < inodes[j].name })
	for _, ino := range inodes {
		size := int64(len(ino.durable))
		if len(ino.data) != len(ino.durable) && p.size != nil && p.size(ino.name) {
			size = int64(len(ino.data))
		}
		img := make([]byte, size)
		copy(img, ino.durable)
		pages := make([]int64, 0, len(ino.dirty))
		for pg := range ino.dirty {
			pages = append(pages, pg)
		}
		sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
		for _, pg := range pages {
			r := ino.dirty[pg]
			lo, hi := r[0], min(r[1], size)
			if lo >= hi {
				continue
			}
			t := stale
			if p.page != nil {
				t = p.page(ino.name, pg)
			}
			switch t {
			case landed:
				clear(img[lo:hi])
				if lo < int64(len(ino.data)) {
					copy(img[lo:hi], ino.data[lo:])
				}
			case zeroed:
				clear(img[lo:hi])
			case garbage:
				rng.Read(img[lo:hi])
			}
		}
		ino.data, ino.durable, ino.dirty = img, append([]byte(nil), img...), nil
	}
	s.names, s.disk = names, map[string]*simInode{}
	for n, ino := range names {
		s.disk[n] = ino
	}
	s.gen++
	s.locks = map[string]bool{}
}

// unsyncedPages lists the pages of the file at path written since its last
// sync.
func (s *simFS) unsyncedPages(path string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[path]
	if ino == nil {
		return nil
	}
	var pages []int64
	for p := range ino.dirty {
		pages = append(pages, p)
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	return pages
}

// rot changes a byte on the disk, as a failing medium does.
func (s *simFS) rot(path string, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino := s.names[path]
	ino.data[off] ^= 0x20
	if off < int64(len(ino.durable)) {
		ino.durable[off] ^= 0x20
	}
}

func (s *simFS) exists(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[path] != nil
}

func (s *simFS) segmentPaths(dir string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var paths []string
	for n := range s.names {
		if filepath.Dir(n) == dir && strings.HasSuffix(n, ".seg") {
			paths = append(paths, n)
		}
	}
	sort.Strings(paths)
	return paths
}

// The cut policies every crash test runs: the extremes, the orders a disk
// may choose that hurt a log most, and random ones.
func cutPolicies() []cutPolicy {
	all := func(t tear) func(string, int64) tear { return func(string, int64) tear { return t } }
	yes := func(string) bool { return true }
	keepEntry := func(string, []string) bool { return true }
	isMarkPage := func(path string, p int64) bool {
		return strings.HasSuffix(path, ".seg") && p*pageBytes >= markOffset(0) && p*pageBytes < recordsV2
	}
	ps := []cutPolicy{
		{name: "nothing unsynced survives"},
		{name: "everything survives", page: all(landed), size: yes, entry: keepEntry},
		{name: "unsynced pages zeroed", page: all(zeroed), size: yes, entry: keepEntry},
		{name: "unsynced pages zeroed, sizes and names as synced", page: all(zeroed)},
		{name: "unsynced pages garbage", page: all(garbage), size: yes, entry: keepEntry, seed: 1},
		{name: "only the durable marks landed", page: func(path string, p int64) tear {
			if isMarkPage(path, p) {
				return landed
			}
			return zeroed
		}, size: yes, entry: keepEntry},
		{name: "all but the durable marks landed", page: func(path string, p int64) tear {
			if isMarkPage(path, p) {
				return stale
			}
			return landed
		}, size: yes, entry: keepEntry},
		{name: "headers lost, records landed", page: func(path string, p int64) tear {
			if strings.HasSuffix(path, ".seg") && p*pageBytes < recordsV2 {
				return zeroed
			}
			return landed
		}, size: yes, entry: keepEntry},
		{name: "only the first unsynced name change survives", page: all(landed), size: yes, entry: func(n string, changed []string) bool { return n == changed[0] }},
		{name: "only the last unsynced name change survives", page: all(landed), size: yes, entry: func(n string, changed []string) bool { return n == changed[len(changed)-1] }},
	}
	for seed := int64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewSource(seed))
		pages, sizes, entries := map[string]tear{}, map[string]bool{}, map[string]bool{}
		ps = append(ps, cutPolicy{
			name: fmt.Sprintf("random %d", seed),
			seed: seed,
			page: func(path string, p int64) tear {
				k := fmt.Sprint(path, p)
				if _, ok := pages[k]; !ok {
					pages[k] = tear(rng.Intn(4))
				}
				return pages[k]
			},
			size: func(path string) bool {
				if _, ok := sizes[path]; !ok {
					sizes[path] = rng.Intn(2) == 0
				}
				return sizes[path]
			},
			entry: func(n string, _ []string) bool {
				if _, ok := entries[n]; !ok {
					entries[n] = rng.Intn(2) == 0
				}
				return entries[n]
			},
		})
	}
	return ps
}

// truncateForTest cuts the file, as a crash that kept the file's creation
// but not its allocation does.
func (ino *simInode) truncateForTest(n int64) error {
	ino.resize(n)
	ino.durable = append(ino.durable[:0:0], ino.data...)
	return nil
}
