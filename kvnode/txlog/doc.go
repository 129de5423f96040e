// Package txlog owns the node's transaction log on disk: the book's
// FileTransactionLogger with every weakness it admits fixed. It is
// hashicorp/raft's LogStore and StableStore, so the Raft log *is* the
// transaction log: every PUT and DELETE is a Raft log entry written here and
// fsynced before the write is acknowledged.
//
// # On-disk format (version 2)
//
// A log directory holds segment files and one stable-state file:
//
//	<dir>/00000000000000000001.seg   segments, named by the index of their first entry (20 decimal digits)
//	<dir>/stable                     hard state (term, vote, the log's first index after compaction)
//	<dir>/stable.spare               64 KiB of nothing, removed to make room for the stable file on a full volume
//	<dir>/LOCK                       empty; flocked by the Log that has the directory open
//
// A segment's first 4 KiB page starts with a 16-byte header: the magic
// "KVTXLOG2" and the index of its first entry (uint64, little endian). The
// next two pages each hold a durable mark (offsets 4096 and 8192), 36
// bytes:
//
//	offset 0   "KVTXMARK"
//	offset 8   uint64 LE  sequence number; mark n lives in page 1 + n%2
//	offset 16  uint64 LE  the segment's first index, as in the header
//	offset 24  uint64 LE  durable end: every record before this offset was on disk before the mark was written
//	offset 32  uint32 LE  CRC-32C of the 32 bytes before it
//
// Records start at offset 12288 and follow back to back:
//
//	offset 0  uint32 LE  length L of the body
//	offset 4  uint32 LE  CRC-32C (Castagnoli) of the 4 length bytes followed by the body
//	offset 8  body (L bytes):
//	            uint64 LE  index
//	            uint64 LE  term
//	            uint8      raft log type
//	            int64 LE   appended-at, Unix nanoseconds (0 when unknown)
//	            uvarint    length of data, then data
//	            the rest   extensions
//
// Keys and values travel inside data as raw bytes, so any byte is allowed;
// nothing is parsed with Sscanf. Indexes inside a segment are contiguous
// from the base in the header, and segments are contiguous with each other.
//
// A segment is preallocated (fallocate) to its pages plus
// Options.SegmentBytes, so that an append's fdatasync need not also commit
// a file-size change; its unused space reads as zeros. A batch of appends
// goes into one segment: when it does not fit in the rest of the active
// one, that segment is fsynced, truncated to its data (sealed) and a new
// one is started before any of the batch is written; a batch larger than
// a segment gets one to itself, allocated past the usual size.
//
// # A full volume
//
// Every byte an append needs (a new segment, or more room in the active
// one) is allocated before any record of the batch is written. When the
// volume has no room, the append fails with ErrNoSpace and nothing of it
// is on disk; unlike a failed write or fdatasync this is not sticky, and
// the same append succeeds once space is freed. Nor does it take any
// space: an allocation the volume plainly has no room for is not tried,
// and a segment that a failed fallocate grew (ext4 and XFS keep what it
// allocated) is cut back, durably, to its size before the call. On a file
// system that cannot preallocate, the write takes the space: one that
// runs out of it is cut back to where its batch began and refused the
// same way. A compaction whose new
// first index cannot be recorded (the stable file's new copy does not
// fit, even after removing the stable file's spare, which is there so
// that raft can record a term on a volume filled by something else) is
// refused the same way, having changed nothing, and so is a
// segment that cannot be created, whose attempt is removed. Open on a
// full volume does not need to preallocate: the next append allocates.
// Keeping room on the volume is the caller's job (kvnode's disk budget,
// package cluster); this only makes sure that running out is survivable.
//
// Version 1 segments ("KVTXLOG1") have the same records right after the
// 16-byte header and no durable marks. Open still reads them (see
// Recovery), and never appends to one: the first append starts a version
// 2 segment. There is no way back: a version 1 binary refuses a directory
// that holds a version 2 segment, as a corrupt segment header.
//
// # Durability: group commit
//
// StoreLogs writes its records with one pwrite under the log's lock, then
// waits, outside the lock, until they may be acknowledged: an fdatasync
// that covered them has finished, and after it a durable mark claiming
// them was written and covered by another finished fdatasync (records in
// a segment sealed since need no mark: sealing synced it in full, and Open
// checks every record of a segment that has a successor). Waiters run
// this in rounds: the first waiter to find no round running writes the
// mark for what the last round's fdatasync covered, then runs one
// fdatasync for everyone who wrote before it started. So under load each
// fdatasync both makes one round's batches durable and acknowledges the
// round before, and N concurrent appenders still share one disk flush
// rather than queueing for N; an append alone waits for two. Nothing
// returns success before its bytes are on disk. After a failed write or
// fdatasync the log refuses every later call (the page cache can no longer
// be trusted), and Err reports why.
//
// The second fdatasync is the price of telling, after a crash, an
// acknowledged record that the disk damaged from a torn one that was never
// acknowledged (see Recovery). With one fdatasync per acknowledgement no
// format can: the disk holds the same bytes just before that fdatasync
// returns, when the record is not acknowledged, as just after, when it is.
//
// # The directory lock
//
// Open takes an exclusive flock (LOCK_EX|LOCK_NB) on <dir>/LOCK before it
// reads anything, and Close releases it after every file is closed. Two
// writers on one directory would interleave appends, and a second opener's
// recovery could cut the holder's append in flight as a torn tail: both
// lose acknowledged writes. So a second Open fails at once with ErrLocked,
// naming the directory, rather than wait. flock belongs to the open file
// description, so a second Open in the same process is refused too, and
// the kernel releases the lock when its holder dies, so a crash leaves no
// stale lock to clean up. kvnode opens the log before anything else in its
// data directory and closes it last, so this lock also keeps a second node
// away from the snapshots.
//
// # Locks
//
// In memory a Log has four locks, always taken in this order, never a later one held
// while waiting for an earlier one:
//
//  1. syncMu: the group commit's state (who runs a round, what may be
//     acknowledged).
//  2. mu: the segments, the first and last index, the sticky failure, what
//     the last round made durable.
//  3. fileMu: keeps segment files open while an fdatasync runs outside mu.
//     Closing files (compaction, truncation, Close) takes it exclusively
//     with mu held; a round takes it shared before it lets go of mu, and
//     releases it before it takes mu again to record what its fdatasync
//     covered, or that it failed.
//  4. the stable file's lock, taken under mu when compaction records the
//     new first index.
//
// Taking mu with fileMu held would deadlock the node the first time an
// fdatasync fails while compaction waits for fileMu under mu.
//
// # Recovery
//
// After a crash a node either starts with every acknowledged write, or
// refuses with an error naming the file and the offset; it never refuses
// because of bytes that were never acknowledged. Open reads the segments in
// order:
//
//   - A segment followed by another is sealed: it was fsynced in full
//     before the next one was created. Every record in it must be intact
//     (zeros may end it; a missing entry then shows as a gap before the
//     next segment).
//   - In the last segment, Open takes the valid durable mark with the
//     highest sequence number, E, and reads records from the start. Where
//     the first record that is not intact starts (wrong length, checksum
//     or index, or a zero length), at offset p: if p < E, the log is
//     corrupt and Open fails ("corrupt record at offset p"); if p >= E,
//     the log ends at p, and everything from p on is cut, even valid
//     records after a hole.
//   - Then Open fdatasyncs what it kept and writes a mark covering it:
//     raft treats every entry it finds at start as stored.
//
// Why this is right. Only the bytes written after the last completed
// fdatasync can be torn: the batches of the last round or rounds, several
// records over several pages, any page of which a power cut may leave
// with its new bytes, zeros, its old bytes or garbage, independently, so
// that a zeroed page may be followed by pages that landed. E is written
// only after an fdatasync covering every record before it has finished,
// one mark at a time (each synced before the next is written, in the other
// page), and a deletion lowers it durably before it truncates; so the
// bytes before E are the records the log wrote, unless the disk damaged
// them since, and a torn mark leaves the previous one, which claims less.
// An append is acknowledged only once a mark covering it is on disk, so
// every acknowledged record in the last segment lies before E: a damaged
// one, including the last one followed by nothing but zeros, is refused. Nothing at or after
// E was acknowledged, so cutting it loses nothing anyone was promised,
// whatever it holds; a valid record after a hole there is one of the
// unacknowledged batches that landed, not a sign of corruption, which is
// why "a valid record later in the segment means corruption" is not the
// rule. What Open keeps past E is a prefix of what was written: space
// past the durable end reads as zeros on disk before an append reuses it
// (segments are preallocated, and a cut tail and a suffix deletion are
// truncated and synced before the next append), so a record there with a
// good checksum and the expected index is the one written there.
//
// What it assumes: a finished fdatasync means the file's data and size are
// on disk, and a finished directory fsync its creates, renames and
// removes; a power cut tears writes at 4 KiB pages or finer and does not
// damage bytes a write did not change ("powersafe overwrite": appending
// to the page holding the last acknowledged record does not damage it,
// rewriting one mark page damages neither the other nor the header);
// preallocated space reads as zeros; CRC-32C catches damage (garbage
// passes it with a chance of one in 2^32).
//
// Version 1 segments have no mark: in a version 1 last segment E is its
// first record, so a torn tail there always opens, and a damaged
// acknowledged record there is cut like one. Once the log has appended (to
// a new segment), that segment is sealed and checked in full.
//
// For comparison: etcd's WAL takes a zero length for the end of its
// preallocated space and calls a bad last record torn when one of its
// sectors is all zeros; hashicorp/raft-wal writes a commit frame, with a
// checksum of its batch, after each batch, and cuts back to the previous
// commit frame. Both acknowledge after one fdatasync, so neither can tell
// the last acknowledged batch damaged from a torn one.
//
// The tests that catch a violation run the log on a simulated disk
// (simfs_test.go) that keeps, at a power cut, only what a finished sync
// covered and tears the rest as above: TestTornLastBatchAtEveryPageBoundary
// and FuzzTornTail tear the unacknowledged tail every way;
// TestBadAcknowledgedRecordRefusesToOpen damages acknowledged records;
// TestCrashAtEverySync cuts the power at every sync of appends, kills,
// Close, deletions of every kind and stable-state writes, with every tear;
// TestCrashDuringSuffixDeletionLeavesAnOpenableLog,
// TestCrashDuringCompactionLeavesTheRightStart,
// TestCompactedSegmentsStayRemoved,
// TestRecoveredEntriesAreProtectedLikeAcknowledgedOnes,
// TestVersion1LogOpensAndMovesOn and TestZeroPageThenStrayBytesOpens cover
// the rest. Making any one fdatasync or directory fsync of the log a
// no-op fails at least one of them.
//
// # Compaction
//
// After a Raft snapshot, raft calls DeleteRange for the prefix the snapshot
// covers. The new first index is recorded in the stable file (written to a
// temporary name, fsynced, renamed and the directory fsynced), then every
// segment that lies wholly before it is deleted, and the directory fsynced
// once. The removals need no order: Open ignores, and removes, a segment
// followed by one that starts at or before the recorded first index; the
// fsync only keeps the space freed after a crash. So the log does not grow
// forever: its size is bounded by the snapshot threshold plus the trailing
// entries kept for slow followers.
//
// Deleting everything (raft does after installing a snapshot, then starts
// the log again past it) records the index after the last entry as the
// first one before it removes any file: a crash in between leaves segments
// that Open knows hold only deleted entries, not a log that starts at the
// old first index with a gap before the next append. When the log starts
// again below that index (a follower whose whole log conflicted with the
// leader's), the first append lowers it first.
//
// A follower whose tail conflicts with the leader's deletes a suffix. The
// segment holding the cut first gets a durable mark at the cut (synced
// before and after), since it is about to be the last segment and its
// mark must claim neither deleted records nor less than the entries that
// stay. Then the segments wholly after the cut are removed, the highest
// first, each removal fsynced before the next (a crash that kept a lower
// removal but not a higher one would leave a gap); only then is the
// segment holding the cut truncated, preallocated again and synced. A
// crash at any point leaves a contiguous log that ends at or after the
// cut, and raft deletes the conflicting entries again.
package txlog
