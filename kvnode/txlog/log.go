package txlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// DefaultSegmentBytes is the room for records segments are preallocated
// with.
const DefaultSegmentBytes = 64 << 20

// firstIndexKey is the stable-file key that holds the log's first index
// after compaction. The "txlog." prefix keeps it apart from raft's keys.
const firstIndexKey = "txlog.first"

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("txlog: closed")

// ErrLocked is returned by Open when another Log (in this process or
// another) has the directory open.
var ErrLocked = errors.New("txlog: log directory in use")

// ErrNoSpace is returned by an append or a deletion that the file system
// had no room for. Like ErrRecordTooLarge it is not sticky: it is returned
// only where nothing was written (a segment could not be created or
// allocated, the stable file's new copy could not be written), so the log
// is intact and the call may be made again once space is freed.
var ErrNoSpace = errors.New(noSpaceMessage)

// noSpaceMessage is ErrNoSpace's message, which IsNoSpace looks for.
const noSpaceMessage = "txlog: no space left on the log's volume"

// IsNoSpace reports whether err is ErrNoSpace, or carries its message:
// raft's log cache (raft.LogCache) hands on only the message of the
// store's error, quoted, and raft hands that to the caller of Apply.
func IsNoSpace(err error) bool {
	return err != nil && (errors.Is(err, ErrNoSpace) || strings.Contains(err.Error(), noSpaceMessage))
}

// ErrRecordTooLarge is returned by an append whose entry would encode to a
// record longer than the reader accepts. Nothing of the batch is written:
// a record the log cannot read back would make every later Open fail.
var ErrRecordTooLarge = errors.New("txlog: record too large")

// Observer receives timings for metrics. Its methods are called on the hot
// path and must not block.
type Observer interface {
	// ObserveAppend is called once per StoreLogs with the number of entries
	// and the time from the call until they were durable.
	ObserveAppend(entries int, d time.Duration)
	// ObserveSync is called after each fdatasync with how long it took.
	ObserveSync(d time.Duration)
}

// Options tune a Log. The zero value is ready to use.
type Options struct {
	// SegmentBytes is the room for records in one segment. A segment file
	// is preallocated to that plus its header pages.
	SegmentBytes int64
	// Observer, if set, receives timings.
	Observer Observer
}

// Log is the file-backed transaction log. It implements raft.LogStore,
// raft.MonotonicLogStore and raft.StableStore. All methods are safe for
// concurrent use.
type Log struct {
	dir    string
	opts   Options
	fs     fileSystem
	stable *stableFile
	// lock holds the directory's flock from Open until Close, so that no
	// second Log, in this process or another, writes the same files.
	lock io.Closer

	// Lock order (see the package doc): syncMu, then mu, then fileMu, then
	// stable.mu. A goroutine never waits for a lock earlier in that order
	// while it holds a later one.
	mu      sync.RWMutex // guards everything below up to fileMu
	segs    []*segment
	first   uint64
	last    uint64
	failed  error  // sticky: after a failed write or sync nothing is trusted
	written uint64 // number of completed writes; a write's number is its sync target
	buf     []byte
	// durable is what the last completed group-commit fdatasync covered:
	// the next round writes it into the active segment's durable mark.
	durable durableState
	// epoch counts the deletions that cut or removed the active segment,
	// so that a round whose fdatasync ran across one does not record an
	// end that no longer exists.
	epoch uint64

	// fileMu keeps a segment file open while the group-commit leader syncs
	// it outside mu. Closing a segment file takes it exclusively, always
	// with mu held; the sync takes it shared, inside mu, and lets go of it
	// before it takes mu again.
	fileMu sync.RWMutex

	syncMu   sync.Mutex
	syncCond *sync.Cond
	syncing  bool
	acked    uint64 // writes up to this number may be acknowledged
}

// durableState says that the records of writes numbered up to upto are on
// disk, and in seg those before offset end.
type durableState struct {
	seg  *segment
	end  int64
	upto uint64
}

type segment struct {
	base uint64
	path string
	f    file
	// v1 marks a segment written by format version 1: it is read, and
	// truncated by deletions, but never appended to, because it has no
	// durable mark.
	v1      bool
	start   int64   // offset of the first record
	offsets []int64 // file offset of entry base+i
	end     int64   // end of the records
	// alloc is how far the file is allocated: appends up to it need no
	// new space. A sealed segment is cut to its end.
	alloc int64
	// markSeq and mark are the sequence number of the segment's latest
	// durable mark and the offset it claims.
	markSeq uint64
	mark    int64
	// torn is set by Open on the last segment when bytes other than zeros
	// follow its last record.
	torn bool
}

func (s *segment) count() uint64 { return uint64(len(s.offsets)) }

var (
	_ raft.LogStore          = (*Log)(nil)
	_ raft.MonotonicLogStore = (*Log)(nil)
	_ raft.StableStore       = (*Log)(nil)
)

// Open opens or creates the log in dir, recovering from a torn last write.
// It fails, naming the file and byte offset, when a record that was on
// disk before the crash is corrupt.
func Open(dir string, opts Options) (*Log, error) { return open(osFS{}, dir, opts) }

func open(fsys fileSystem, dir string, opts Options) (*Log, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("txlog: %w", err)
	}
	// Locked before anything is read: a second opener must not even cut
	// what looks like a torn tail but is the holder's append in flight.
	lock, err := fsys.Lock(dir)
	if err != nil {
		return nil, err
	}
	st, err := openStable(fsys, dir)
	if err != nil {
		_ = lock.Close() // releases the lock; nothing was written
		return nil, fmt.Errorf("txlog: %w", err)
	}
	l := &Log{dir: dir, opts: opts, fs: fsys, stable: st, lock: lock}
	l.syncCond = sync.NewCond(&l.syncMu)
	if err := l.load(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

func (l *Log) load() error {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("txlog: %w", err)
	}
	var bases []uint64
	for _, name := range names {
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		base, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			return fmt.Errorf("txlog: unexpected file %s in %s", name, l.dir)
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	// A segment followed by one that starts at or before the recorded first
	// index holds only deleted entries: compaction records the first index
	// before it removes files, and removes them in no particular order, so
	// a crash can leave any of them. They are not read, and are removed
	// below.
	recorded := l.recordedFirst()
	var dead []string
	for len(bases) > 1 && bases[1] <= recorded {
		dead = append(dead, filepath.Join(l.dir, segmentName(bases[0])))
		bases = bases[1:]
	}
	for i, base := range bases {
		last := i == len(bases)-1
		seg, err := l.loadSegment(base, last)
		if err != nil {
			return err
		}
		if seg == nil {
			continue // a segment whose creation a crash interrupted
		}
		if n := len(l.segs); n > 0 {
			prev := l.segs[n-1]
			if prev.base+prev.count() != seg.base {
				_ = seg.f.Close()
				return fmt.Errorf("txlog: %s starts at index %d but %s ends at %d: a segment is missing", seg.path, seg.base, prev.path, prev.base+prev.count()-1)
			}
		}
		l.segs = append(l.segs, seg)
	}
	var total uint64
	for _, s := range l.segs {
		total += s.count()
	}
	if total > 0 {
		l.first = max(l.segs[0].base, recorded)
		l.last = l.segs[len(l.segs)-1].base + l.segs[len(l.segs)-1].count() - 1
		if l.first > l.last {
			// Every entry was deleted (deleteAll) before a crash kept the
			// files: nothing is live.
			l.fileMu.Lock()
			for _, s := range l.segs {
				_ = s.f.Close() // removed next
				dead = append(dead, s.path)
			}
			l.fileMu.Unlock()
			l.segs, l.first, l.last = nil, 0, 0
		}
	}
	if len(dead) > 0 {
		if err := l.removeFiles(dead, false); err != nil {
			return err
		}
	}
	return l.repairTail()
}

// recordedFirst is the first index compaction recorded, 0 when none.
func (l *Log) recordedFirst() uint64 {
	if b, ok := l.stable.get(firstIndexKey); ok && len(b) == 8 {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// loadSegment reads one segment and indexes its records. In the last
// segment, records after its durable mark that a crash tore are left out
// (repairTail cuts them); anywhere else a bad record is corruption.
func (l *Log) loadSegment(base uint64, last bool) (*segment, error) {
	path := filepath.Join(l.dir, segmentName(base))
	data, err := l.fs.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("txlog: %w", err)
	}
	seg := &segment{base: base, path: path}
	switch {
	case hasHeader(data, segmentMagicV1, base):
		// Version 1 kept no durable mark: in its last segment nothing
		// tells a torn write from a damaged acknowledged one, and the
		// torn write is the one a crash makes.
		seg.v1, seg.start, seg.mark = true, segmentHeader, segmentHeader
	case hasHeader(data, segmentMagicV2, base):
		seg.start = recordsV2
		var ok bool
		seg.markSeq, seg.mark, ok = readMarks(data, base)
		if !ok {
			if last && interruptedCreation(data) {
				// Created, but its marks never reached the disk.
				if err := l.fs.Remove(path); err != nil {
					return nil, fmt.Errorf("txlog: %w", err)
				}
				return nil, nil
			}
			return nil, fmt.Errorf("txlog: %s: corrupt durable marks at offsets %d and %d", path, markOffset(0), markOffset(1))
		}
		if seg.mark > int64(len(data)) {
			return nil, fmt.Errorf("txlog: %s: durable mark at offset %d says records up to offset %d are on disk, but the file has %d bytes", path, markOffset(seg.markSeq), seg.mark, len(data))
		}
	case newerFormat(data) != 0:
		// Not corruption: a newer kvnode wrote it (a downgrade). Refused
		// whole, before anything is read or repaired.
		return nil, fmt.Errorf("txlog: %s: written in transaction-log format version %d; this kvnode reads versions up to %d: run a kvnode that reads it (a downgrade across a data-format version is not possible)", path, newerFormat(data), FormatVersion)
	default:
		if last && interruptedCreation(data) {
			// Created, but its header never reached the disk; nothing
			// was written after it.
			if err := l.fs.Remove(path); err != nil {
				return nil, fmt.Errorf("txlog: %w", err)
			}
			return nil, nil
		}
		return nil, fmt.Errorf("txlog: %s: corrupt segment header at offset 0", path)
	}
	off := seg.start
	var rec raft.Log
	for off < int64(len(data)) {
		rest := data[off:]
		if !last && allZero(rest) {
			break // space preallocated and never used
		}
		n, err := decodeRecord(rest, &rec)
		if err == nil && rec.Index != base+seg.count() {
			err = fmt.Errorf("index %d where %d was expected", rec.Index, base+seg.count())
		}
		if err == nil && off < seg.mark && off+int64(n) > seg.mark {
			err = fmt.Errorf("record runs past the durable end at offset %d", seg.mark)
		}
		if err != nil {
			if last && off >= seg.mark {
				// Nothing at or after the mark was acknowledged: see
				// the package doc, # Recovery.
				seg.torn = !allZero(rest)
				break
			}
			if last {
				err = fmt.Errorf("%v (the durable mark says the records up to offset %d were on disk)", err, seg.mark)
			}
			return nil, fmt.Errorf("txlog: %s: corrupt record at offset %d: %v", path, off, err)
		}
		seg.offsets = append(seg.offsets, off)
		off += int64(n)
	}
	seg.end, seg.alloc = off, int64(len(data))
	if seg.f, err = l.fs.OpenRW(path); err != nil {
		return nil, fmt.Errorf("txlog: %w", err)
	}
	return seg, nil
}

// FormatVersion is the transaction-log format this package writes, and
// the newest it reads.
const FormatVersion = 2

// newerFormat is the format version of a segment header written by a
// newer kvnode, 0 for any other header.
func newerFormat(data []byte) int {
	if len(data) < len(segmentMagicPrefix)+1 || string(data[:len(segmentMagicPrefix)]) != segmentMagicPrefix {
		return 0
	}
	v := int(data[len(segmentMagicPrefix)] - '0')
	if v > FormatVersion && v <= 9 {
		return v
	}
	return 0
}

func hasHeader(data []byte, magic string, base uint64) bool {
	return len(data) >= segmentHeader && string(data[:8]) == magic && binary.LittleEndian.Uint64(data[8:]) == base
}

// interruptedCreation reports whether a last segment whose header or marks
// are not intact is one a crash caught while creating it: createSegment
// syncs the header and marks before any record is written, so then no
// record follows. A version 1 segment, whose records start right after the
// header, is never taken for one.
func interruptedCreation(data []byte) bool {
	if len(data) > segmentHeader {
		if _, err := decodeRecord(data[segmentHeader:], &raft.Log{}); err == nil {
			return false
		}
	}
	return len(data) <= recordsV2 || allZero(data[recordsV2:])
}

// repairTail readies the last segment for appends: it cuts what a crash
// tore after its last record, makes everything Open read durable, and
// writes a durable mark that covers it.
func (l *Log) repairTail() error {
	if len(l.segs) == 0 {
		return nil
	}
	seg := l.segs[len(l.segs)-1]
	if seg.torn {
		// A later append must not end short of the torn bytes and leave
		// some after it, where a recovery would read them as the next
		// record.
		if err := seg.f.Truncate(seg.end); err != nil {
			return fmt.Errorf("txlog: truncate torn tail of %s: %w", seg.path, err)
		}
		seg.alloc = seg.end
	}
	if !seg.v1 {
		// A full volume must not keep the node from starting (it would
		// only restart again): without the room, appends allocate what
		// they need, and are refused with ErrNoSpace when they cannot.
		if err := l.allocate(seg, seg.start+l.opts.SegmentBytes); err != nil && !errors.Is(err, ErrNoSpace) {
			return err
		}
	}
	// What Open read may be in the page cache only (the process died, the
	// machine did not), and raft treats every entry it finds at start as
	// stored. It must be on disk before it is served, and before a mark
	// claims it: a mark that reached the disk ahead of the records it
	// covers would make the next recovery refuse a torn write.
	if err := seg.f.Sync(); err != nil {
		return fmt.Errorf("txlog: fdatasync %s: %w", seg.path, err)
	}
	if !seg.v1 && seg.end > seg.mark {
		if err := l.writeMark(seg, seg.end); err != nil {
			return err
		}
		if err := seg.f.Sync(); err != nil {
			return fmt.Errorf("txlog: fdatasync %s: %w", seg.path, err)
		}
	}
	l.durable = durableState{seg: seg, end: seg.end}
	return nil
}

func segmentName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }

// FirstIndex returns the first index in the log, 0 when it is empty.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.first, l.failed
}

// LastIndex returns the last index in the log, 0 when it is empty.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last, l.failed
}

// IsMonotonic tells raft that indexes are dense, so after a snapshot
// restore it deletes the whole log instead of leaving a gap.
func (l *Log) IsMonotonic() bool { return true }

// GetLog reads the entry at index into out.
func (l *Log) GetLog(index uint64, out *raft.Log) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.failed != nil {
		return l.failed
	}
	if l.last == 0 || index < l.first || index > l.last {
		return raft.ErrLogNotFound
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > index }) - 1
	seg := l.segs[i]
	k := index - seg.base
	start, end := seg.offsets[k], seg.end
	if k+1 < seg.count() {
		end = seg.offsets[k+1]
	}
	buf := make([]byte, end-start)
	if _, err := seg.f.ReadAt(buf, start); err != nil {
		return fmt.Errorf("txlog: read %s at offset %d: %w", seg.path, start, err)
	}
	if _, err := decodeRecord(buf, out); err != nil {
		return fmt.Errorf("txlog: %s: corrupt record at offset %d: %w", seg.path, start, err)
	}
	if out.Index != index {
		return fmt.Errorf("txlog: %s: offset %d holds index %d, not %d", seg.path, start, out.Index, index)
	}
	return nil
}

// StoreLog appends one entry; see StoreLogs.
func (l *Log) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends entries whose indexes continue the log without a gap,
// and returns once they are on disk.
func (l *Log) StoreLogs(logs []*raft.Log) error {
	c, err := l.Append(logs)
	if err != nil {
		return err
	}
	return c.Wait()
}

// Commit is an append that is written but not yet known to be durable.
type Commit struct {
	l       *Log
	target  uint64
	entries int
	start   time.Time
}

// Append writes entries whose indexes continue the log and returns without
// waiting for the disk. Callers that must order their appends but not their
// waits (several writers behind one sequencer) call Append in order and
// Wait concurrently, so that their waits share fdatasyncs.
func (l *Log) Append(logs []*raft.Log) (Commit, error) {
	start := time.Now()
	if len(logs) == 0 {
		return Commit{}, nil
	}
	target, err := l.write(logs)
	if err != nil {
		return Commit{}, err
	}
	return Commit{l: l, target: target, entries: len(logs), start: start}, nil
}

// Wait returns once the append is durable.
func (c Commit) Wait() error {
	if c.l == nil {
		return nil
	}
	if err := c.l.waitDurable(c.target); err != nil {
		return err
	}
	if c.l.opts.Observer != nil {
		c.l.opts.Observer.ObserveAppend(c.entries, time.Since(c.start))
	}
	return nil
}

// write appends the records to the page cache and returns the sync target
// that covers them.
func (l *Log) write(logs []*raft.Log) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		return 0, l.failed
	}
	if l.last != 0 && logs[0].Index != l.last+1 {
		return 0, fmt.Errorf("txlog: append of index %d after %d leaves a gap or overlaps", logs[0].Index, l.last)
	}
	for i := 1; i < len(logs); i++ {
		if logs[i].Index != logs[i-1].Index+1 {
			return 0, fmt.Errorf("txlog: batch is not contiguous at index %d", logs[i].Index)
		}
	}
	for _, log := range logs {
		// Checked for the whole batch before any byte is written, and not
		// sticky: the log is intact, only this append is refused.
		if n := recordBodyBytes(log); n > MaxRecordBytes {
			return 0, fmt.Errorf("%w: entry %d would be a %d-byte record; the limit is %d", ErrRecordTooLarge, log.Index, n, MaxRecordBytes)
		}
	}
	if l.last == 0 {
		if err := l.lowerFirst(logs[0].Index); err != nil {
			return 0, l.refuse(err)
		}
	}
	// The batch is encoded whole before anything is written: it goes into
	// one segment, and whatever space it needs is found first, so that a
	// full volume refuses it (ErrNoSpace) with nothing of it on disk.
	l.buf = l.buf[:0]
	offs := make([]int64, len(logs))
	for i, log := range logs {
		offs[i] = int64(len(l.buf))
		l.buf = appendRecord(l.buf, log)
	}
	seg, err := l.activeFor(logs[0].Index)
	if err != nil {
		return 0, l.refuse(err)
	}
	if seg.count() > 0 && seg.end-seg.start+int64(len(l.buf)) > l.opts.SegmentBytes {
		// Sealed before any of the batch is written: a segment followed
		// by another must hold only records that are on disk (see
		// roll). A batch larger than a segment gets one to itself.
		if seg, err = l.roll(logs[0].Index); err != nil {
			return 0, l.refuse(err)
		}
	}
	if err := l.allocate(seg, seg.end+int64(len(l.buf))); err != nil {
		return 0, l.refuse(err)
	}
	if err := l.flush(seg, offs); err != nil {
		return 0, l.unwrite(seg, err)
	}
	if l.last == 0 {
		l.first = logs[0].Index
	}
	l.last = logs[len(logs)-1].Index
	l.written++
	return l.written, nil
}

// refuse returns err for an operation that failed before it changed
// anything: ErrNoSpace when the volume was full, which is not sticky;
// anything else is.
func (l *Log) refuse(err error) error {
	if errors.Is(err, ErrNoSpace) {
		return err
	}
	if isNoSpace(err) {
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	return l.fail(err)
}

// unwrite handles a failed write of a batch into seg. A write that ran
// out of space (a file system that cannot preallocate, where allocate
// could not take the room first) is cut back to where the batch began,
// durably, and refused with ErrNoSpace like any append without room:
// nothing before the cut is touched, and what the write left past it is
// gone. Any other failure is sticky.
func (l *Log) unwrite(seg *segment, err error) error {
	if !isNoSpace(err) {
		return l.fail(err)
	}
	if terr := seg.f.Truncate(seg.end); terr != nil {
		return l.fail(fmt.Errorf("%v; cut %s back to %d bytes: %w", err, seg.path, seg.end, terr))
	}
	if serr := seg.f.Sync(); serr != nil {
		return l.fail(fmt.Errorf("%v; cut %s back to %d bytes: fdatasync: %w", err, seg.path, seg.end, serr))
	}
	seg.alloc = seg.end
	return fmt.Errorf("%w: %v", ErrNoSpace, err)
}

// allocate makes sure seg is allocated up to size: to its preallocated
// size when that is larger, so that a segment cut short grows back in one
// step. A volume without the room leaves seg as it was and returns
// ErrNoSpace; a file system that cannot preallocate is left to allocate
// as appends come.
func (l *Log) allocate(seg *segment, size int64) error {
	if size <= seg.alloc {
		return nil
	}
	size = max(size, seg.start+l.opts.SegmentBytes)
	if err := seg.f.Allocate(size); err != nil {
		// ext4 and XFS keep what a fallocate that ran out of space
		// allocated, and grow the file by it: the refused append would
		// leave the volume with nothing free, and raft panics when it
		// cannot record its next term. It is given back, and durably, or
		// a crash would bring it back at the next Open. seg.alloc is the
		// file's size before the call; the records end at or before it.
		if terr := seg.f.Truncate(seg.alloc); terr != nil {
			return fmt.Errorf("txlog: cut %s back to %d bytes after a failed preallocation (%v): %w", seg.path, seg.alloc, err, terr)
		}
		if serr := seg.f.Sync(); serr != nil {
			return fmt.Errorf("txlog: cut %s back to %d bytes after a failed preallocation (%v): fdatasync: %w", seg.path, seg.alloc, err, serr)
		}
		if isNoSpace(err) {
			return fmt.Errorf("%w: allocate %d bytes for %s: %v", ErrNoSpace, size, seg.path, err)
		}
		return fmt.Errorf("txlog: preallocate %s: %w", seg.path, err)
	}
	seg.alloc = size
	return nil
}

// lowerFirst makes sure the recorded first index does not hide an empty
// log's first entry, index: deleteAll records the index after the last
// entry it deletes, and raft may start the log again below it (a follower
// whose whole log conflicts with the leader's).
func (l *Log) lowerFirst(index uint64) error {
	if l.recordedFirst() <= index {
		return nil
	}
	return l.setFirst(index)
}

// activeFor returns the segment the entry at index goes to, starting one
// when the log is empty or its last segment is version 1.
func (l *Log) activeFor(index uint64) (*segment, error) {
	if n := len(l.segs); n > 0 {
		seg := l.segs[n-1]
		switch {
		case seg.v1 && seg.count() > 0:
			// Never appended to: a version 1 segment has no durable mark.
			return l.roll(index)
		case !seg.v1 && (seg.count() > 0 || seg.base == index):
			return seg, nil
		}
		// An empty segment left by a truncation at a different index, or
		// an empty version 1 segment.
		l.segs = l.segs[:n-1]
		if err := l.removeSegments([]*segment{seg}, false); err != nil {
			return nil, err
		}
	}
	seg, err := l.createSegment(index)
	if err != nil {
		return nil, err
	}
	l.segs = append(l.segs, seg)
	return seg, nil
}

func (l *Log) flush(seg *segment, offs []int64) error {
	if len(l.buf) == 0 {
		return nil
	}
	if _, err := seg.f.WriteAt(l.buf, seg.end); err != nil {
		return fmt.Errorf("txlog: write %s at offset %d: %w", seg.path, seg.end, err)
	}
	for _, o := range offs {
		seg.offsets = append(seg.offsets, seg.end+o)
	}
	seg.end += int64(len(l.buf))
	l.buf = l.buf[:0]
	return nil
}

// roll seals the active segment (cut to its data and synced) and starts a
// new one whose first entry will be base. Once the new segment exists on
// disk the sealed one is no longer last, so Open checks every record in it
// as acknowledged: it must be on disk in full first. When the new segment
// cannot be created for want of space, the sealed one stays the active
// segment, intact, and is allocated again by the next append into it.
func (l *Log) roll(base uint64) (*segment, error) {
	old := l.segs[len(l.segs)-1]
	if err := old.f.Truncate(old.end); err != nil {
		return nil, fmt.Errorf("txlog: seal %s: %w", old.path, err)
	}
	old.alloc = old.end
	if err := old.f.Sync(); err != nil {
		return nil, fmt.Errorf("txlog: seal %s: %w", old.path, err)
	}
	seg, err := l.createSegment(base)
	if err != nil {
		return nil, err
	}
	l.segs = append(l.segs, seg)
	return seg, nil
}

// createSegment creates a version 2 segment: the header, and both durable
// marks claiming no records, are on disk, and so is its directory entry,
// before any record is written to it. A crash before then leaves a segment
// with no record, which Open removes.
func (l *Log) createSegment(base uint64) (*segment, error) {
	path := filepath.Join(l.dir, segmentName(base))
	f, err := l.fs.Create(path)
	if err != nil {
		return nil, fmt.Errorf("txlog: %w", err)
	}
	head := make([]byte, recordsV2)
	copy(head, segmentMagicV2)
	binary.LittleEndian.PutUint64(head[8:], base)
	copy(head[markOffset(0):], encodeMark(0, base, recordsV2))
	copy(head[markOffset(1):], encodeMark(1, base, recordsV2))
	err = f.Allocate(recordsV2 + l.opts.SegmentBytes)
	if err == nil {
		_, err = f.WriteAt(head, 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = l.fs.SyncDir(l.dir)
	}
	if err != nil {
		_ = f.Close()
		if isNoSpace(err) {
			// Whatever the attempt allocated is given back. Should the
			// removal not reach the disk, Open removes a segment whose
			// creation was cut short.
			_ = l.fs.Remove(path)
			return nil, fmt.Errorf("%w: create %s: %v", ErrNoSpace, path, err)
		}
		return nil, fmt.Errorf("txlog: create %s: %w", path, err)
	}
	return &segment{base: base, path: path, f: f, start: recordsV2, end: recordsV2, alloc: recordsV2 + l.opts.SegmentBytes, markSeq: 1, mark: recordsV2}, nil
}

// writeMark writes a durable mark claiming that seg's records before end
// are on disk. The caller has seen that claim come true (a completed
// fdatasync covered them) and syncs the mark before it relies on it; it
// also makes sure no other mark write is still unsynced, because a power
// cut may tear both pages being written and leave no valid mark.
func (l *Log) writeMark(seg *segment, end int64) error {
	seq := seg.markSeq + 1
	if _, err := seg.f.WriteAt(encodeMark(seq, seg.base, end), markOffset(seq)); err != nil {
		return fmt.Errorf("txlog: write durable mark of %s: %w", seg.path, err)
	}
	seg.markSeq, seg.mark = seq, end
	return nil
}

// waitDurable returns once write number target may be acknowledged: its
// records are on disk, and so is a durable mark covering them (or they
// are in a sealed segment). Each round of the group commit writes the
// mark for what the previous round's fdatasync covered, then runs one
// fdatasync: under load, each round makes one batch durable and
// acknowledges the batch before it. The first waiter to find no round
// running runs one for everyone.
func (l *Log) waitDurable(target uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	for l.acked < target {
		if l.syncing {
			l.syncCond.Wait()
			continue
		}
		l.syncing = true
		l.syncMu.Unlock()
		acked, err := l.syncRound()
		l.syncMu.Lock()
		l.syncing = false
		l.syncCond.Broadcast()
		if err != nil {
			return err
		}
		if acked > l.acked {
			l.acked = acked
		}
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.failed
}

// syncRound is one round of the group commit. It returns the write number
// up to which appends may now be acknowledged.
func (l *Log) syncRound() (uint64, error) {
	l.mu.Lock()
	if l.failed != nil {
		defer l.mu.Unlock()
		return 0, l.failed
	}
	d := l.durable
	var seg *segment
	if n := len(l.segs); n > 0 {
		seg = l.segs[n-1]
	}
	if seg == nil {
		// Everything written was deleted.
		l.mu.Unlock()
		return l.written, nil
	}
	if d.seg == seg && !seg.v1 && d.end > seg.mark {
		// Whatever the previous round's fdatasync covered is now claimed;
		// this round's fdatasync makes the claim durable. When d.seg is
		// not the active segment, its records are in segments sealed
		// since, which need no mark.
		if err := l.writeMark(seg, d.end); err != nil {
			defer l.mu.Unlock()
			return 0, l.fail(err)
		}
	}
	upto, end, epoch := l.written, seg.end, l.epoch
	// fileMu is taken before mu is released, so that the file cannot be
	// closed under the sync; it is taken inside mu, in the package's lock
	// order.
	l.fileMu.RLock()
	l.mu.Unlock()
	start := time.Now()
	err := seg.f.Sync()
	// Released before mu is taken again: compaction and Close hold mu
	// while they wait for fileMu, so taking mu with fileMu held deadlocks
	// the node on the first failed fdatasync.
	l.fileMu.RUnlock()
	if err != nil {
		err = fmt.Errorf("txlog: fdatasync %s: %w", seg.path, err)
		l.mu.Lock()
		_ = l.fail(err)
		l.mu.Unlock()
		// This append's own cause, even when Close or an earlier failure
		// stopped the log first.
		return 0, err
	}
	if l.opts.Observer != nil {
		l.opts.Observer.ObserveSync(time.Since(start))
	}
	l.mu.Lock()
	if l.epoch == epoch && upto > l.durable.upto {
		l.durable = durableState{seg: seg, end: end, upto: upto}
	}
	l.mu.Unlock()
	return d.upto, nil
}

// fail makes err sticky. Called with mu held.
func (l *Log) fail(err error) error {
	if l.failed == nil {
		l.failed = err
	}
	return l.failed
}

// Err reports the error that stopped the log, or nil while it is healthy.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if errors.Is(l.failed, ErrClosed) {
		return nil
	}
	return l.failed
}

// DeleteRange deletes the entries from min to max inclusive. Raft deletes
// either a prefix (compaction after a snapshot), a suffix (a follower
// dropping entries that conflict with the leader's) or everything.
func (l *Log) DeleteRange(min, max uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		return l.failed
	}
	if l.last == 0 || max < l.first || min > l.last || min > max {
		return nil
	}
	switch {
	case min <= l.first && max >= l.last:
		return l.deleteAll()
	case min <= l.first:
		return l.deletePrefix(max + 1)
	case max >= l.last:
		return l.deleteSuffix(min)
	default:
		return fmt.Errorf("txlog: cannot delete %d..%d from the middle of %d..%d", min, max, l.first, l.last)
	}
}

// deleteAll records that every entry is deleted before it removes any
// file: raft deletes everything after installing a snapshot and starts the
// log again past it, so a crash that left an old segment as the log's
// start would leave a gap in front of the next append. Open treats the
// segments that survive such a crash as leftovers.
func (l *Log) deleteAll() error {
	if err := l.setFirst(l.last + 1); err != nil {
		return l.refuse(err)
	}
	segs := l.segs
	l.segs, l.first, l.last = nil, 0, 0
	l.epoch++
	l.durable = durableState{upto: l.written}
	return l.removeSegments(segs, false)
}

func (l *Log) deletePrefix(first uint64) error {
	// Record the new start before removing files, so a crash in between
	// leaves a log that still knows where it begins.
	if err := l.setFirst(first); err != nil {
		// Compaction on a full volume is tried again after the next
		// snapshot; nothing was changed.
		return l.refuse(err)
	}
	l.first = first
	n := 0
	for n < len(l.segs)-1 && l.segs[n].base+l.segs[n].count() <= first {
		n++
	}
	gone := l.segs[:n:n]
	l.segs = l.segs[n:]
	return l.removeSegments(gone, false)
}

// deleteSuffix deletes the entries from index from on. First the segment
// holding the cut gets a durable mark at the cut: it is about to become
// the last segment, and its mark must claim neither the records being
// deleted (the next appends reuse their space, and a torn one below a
// stale mark would read as corruption) nor less than the entries that
// stay. Then the whole segments after the cut go, the highest first, each
// removal durable before the next: a crash then leaves a contiguous log
// that ends at or after from-1, whose conflicting tail raft deletes again.
// Only then is the segment holding the cut truncated; truncating first
// would leave, after a crash, segments that start past its end.
func (l *Log) deleteSuffix(from uint64) error {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > from }) - 1
	gone := make([]*segment, 0, len(l.segs)-i-1)
	for j := len(l.segs) - 1; j > i; j-- {
		gone = append(gone, l.segs[j])
	}
	seg := l.segs[i]
	k := from - seg.base
	cut := seg.offsets[k]
	if !seg.v1 {
		// The mark claims the records before the cut: this sync puts them
		// on disk, along with any mark a group-commit round wrote and has
		// not yet synced, so that only one mark write is ever unsynced.
		if err := seg.f.Sync(); err != nil {
			return l.fail(fmt.Errorf("txlog: sync %s: %w", seg.path, err))
		}
		if err := l.writeMark(seg, cut); err != nil {
			return l.fail(err)
		}
		// Durable before the truncation can be: a stale mark past the cut
		// over a truncated file would read as lost records.
		if err := seg.f.Sync(); err != nil {
			return l.fail(fmt.Errorf("txlog: sync %s: %w", seg.path, err))
		}
	}
	l.segs = l.segs[:i+1]
	// From here the log in memory ends where seg ends, as it will on disk
	// once the later segments are gone.
	l.last = seg.base + seg.count() - 1
	l.epoch++
	l.durable = durableState{seg: seg, end: cut, upto: l.written}
	if err := l.removeSegments(gone, true); err != nil {
		return err
	}
	if err := seg.f.Truncate(cut); err != nil {
		return l.fail(fmt.Errorf("txlog: truncate %s: %w", seg.path, err))
	}
	seg.alloc = cut
	if !seg.v1 {
		// Without the room, the next append allocates what it needs.
		if err := l.allocate(seg, seg.start+l.opts.SegmentBytes); err != nil && !errors.Is(err, ErrNoSpace) {
			return l.fail(err)
		}
	}
	// The deletion is durable when DeleteRange returns, and the space
	// after the cut reads as zeros on disk before an append reuses it: a
	// torn append must not leave a deleted record behind it that a
	// recovery would read as the next entry.
	if err := seg.f.Sync(); err != nil {
		return l.fail(fmt.Errorf("txlog: sync %s: %w", seg.path, err))
	}
	seg.offsets = seg.offsets[:k]
	seg.end = cut
	l.last = from - 1
	return nil
}

func (l *Log) setFirst(first uint64) error {
	return l.stable.set(firstIndexKey, binary.LittleEndian.AppendUint64(nil, first))
}

// removeSegments closes and deletes segs in the order given.
func (l *Log) removeSegments(segs []*segment, ordered bool) error {
	if len(segs) == 0 {
		return nil
	}
	l.fileMu.Lock()
	paths := make([]string, len(segs))
	for i, s := range segs {
		_ = s.f.Close() // removed next
		paths[i] = s.path
	}
	l.fileMu.Unlock()
	if err := l.removeFiles(paths, ordered); err != nil {
		return l.fail(err)
	}
	return nil
}

// removeFiles deletes paths in the order given. When ordered, each removal
// is made durable before the next, because a crash that kept an earlier
// removal but not a later one would leave a gap in the log; otherwise the
// directory is synced once at the end, so that the space freed stays
// freed after a crash.
func (l *Log) removeFiles(paths []string, ordered bool) error {
	for _, p := range paths {
		if err := l.fs.Remove(p); err != nil {
			return fmt.Errorf("txlog: %w", err)
		}
		if ordered {
			if err := l.fs.SyncDir(l.dir); err != nil {
				return fmt.Errorf("txlog: sync %s: %w", l.dir, err)
			}
		}
	}
	if !ordered {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("txlog: sync %s: %w", l.dir, err)
		}
	}
	return nil
}

// Size is the number of bytes of records on disk (not counting
// preallocated space).
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segs {
		n += s.end - s.start
	}
	return n
}

// Unused is the space allocated to the log that records have not used
// yet: appends fill it before they need more from the volume.
func (l *Log) Unused() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segs {
		n += max(0, s.alloc-s.end)
	}
	return n
}

// SegmentBytes is the room for records in one segment.
func (l *Log) SegmentBytes() int64 { return l.opts.SegmentBytes }

// Close syncs and closes the files. Later calls return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(l.failed, ErrClosed) {
		return nil
	}
	var err error
	if n := len(l.segs); n > 0 && l.failed == nil {
		err = l.segs[n-1].f.Sync()
	}
	l.failed = ErrClosed
	l.closeFiles()
	return err
}

func (l *Log) closeFiles() {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	for _, s := range l.segs {
		if s.f != nil {
			_ = s.f.Close()
		}
	}
	// Last, once no file of the log is open for writing.
	if l.lock != nil {
		_ = l.lock.Close() // releases the flock; the file has no content
	}
}

// Set stores a value under key in the stable state.
func (l *Log) Set(key, val []byte) error { return l.stable.set("b:"+string(key), val) }

// Get returns the value stored under key, or an error saying "not found".
func (l *Log) Get(key []byte) ([]byte, error) {
	v, ok := l.stable.get("b:" + string(key))
	if !ok {
		return nil, errNotFound
	}
	return v, nil
}

// SetUint64 stores an integer under key in the stable state.
func (l *Log) SetUint64(key []byte, val uint64) error {
	return l.stable.set("u:"+string(key), binary.LittleEndian.AppendUint64(nil, val))
}

// GetUint64 returns the integer stored under key, 0 when there is none.
func (l *Log) GetUint64(key []byte) (uint64, error) {
	v, ok := l.stable.get("u:" + string(key))
	if !ok || len(v) != 8 {
		return 0, nil
	}
	return binary.LittleEndian.Uint64(v), nil
}

// EnsureSpare makes the stable file's spare whole again when a full
// volume used it up: the caller calls it once there is room. It is cheap
// while the spare is whole.
func (l *Log) EnsureSpare() { l.stable.ensureSpare() }
