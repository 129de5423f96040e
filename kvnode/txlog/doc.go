// Package txlog owns the node's transaction log on disk: the book's
// FileTransactionLogger with every weakness it admits fixed. It is
// hashicorp/raft's LogStore and StableStore, so the Raft log *is* the
// transaction log: every PUT and DELETE is a Raft log entry written here and
// fsynced before the write is acknowledged.
//
// # On-disk format (version 1)
//
// A log directory holds segment files and one stable-state file:
//
//	<dir>/00000000000000000001.seg   segments, named by the index of their first entry (20 decimal digits)
//	<dir>/stable                     hard state (term, vote, the log's first index after compaction)
//	<dir>/LOCK                       empty; flocked by the Log that has the directory open
//
// A segment starts with a 16-byte header: the magic "KVTXLOG1" and the index
// of its first entry (uint64, little endian). Records follow back to back:
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
// A segment is preallocated (fallocate) to the segment size so that an
// append's fdatasync need not also commit a file-size change, and a length
// of zero marks the end of its records. When a segment is full it is
// fsynced, truncated to its data and a new one is started.
//
// # Durability: group commit
//
// StoreLogs writes its records with one pwrite under the log's lock, then
// waits, outside the lock, until an fdatasync covering its bytes has
// finished. The first waiter runs that fdatasync for everyone who wrote
// before it started, so N concurrent appenders share one disk flush rather
// than queueing for N. Nothing returns success before its bytes are on disk.
// After a failed write or fdatasync the log refuses every later call (the
// page cache can no longer be trusted), and Err reports why.
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
//  1. syncMu: the group commit's state (who syncs, up to which write).
//  2. mu: the segments, the first and last index, the sticky failure.
//  3. fileMu: keeps segment files open while an fdatasync runs outside mu.
//     Closing files (compaction, truncation, Close) takes it exclusively
//     with mu held; the sync takes it shared before it lets go of mu, and
//     releases it before it takes mu again to record a failed fdatasync.
//  4. the stable file's lock, taken under mu when compaction records the
//     new first index.
//
// Taking mu with fileMu held would deadlock the node the first time an
// fdatasync fails while compaction waits for fileMu under mu.
//
// # Recovery
//
// Open reads every segment. In the last segment, a record whose length or
// checksum is wrong and that is followed only by zero bytes (or the end of
// the file) is a torn write from a crash: it is cut off and the log opens.
// A bad record anywhere else is corruption: Open fails with an error that
// names the file and the byte offset, and the node refuses to start rather
// than silently lose acknowledged writes.
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
// segments wholly after the cut are removed first, the highest first, each
// removal fsynced before the next (a crash that kept a lower removal but
// not a higher one would leave a gap); only then is the segment holding
// the cut truncated. A crash at any point leaves a contiguous log that
// ends at or after the cut, and raft deletes the conflicting entries
// again.
package txlog
