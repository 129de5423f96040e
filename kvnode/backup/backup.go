// Package backup owns the format of a kvnode backup: one self-describing
// file that holds a consistent snapshot of a store, what it is a snapshot
// of, and a checksum over all of it. kvnode writes it (GET
// /v1/cluster/backup) and reads it back (--restore-from); nothing else
// declares it. It imports only the standard library, so that the operator
// and users' tools can read a backup's header without pulling in Raft.
//
// # Format (version 1)
//
//	offset 0   "KVBACKUP"                 8 bytes
//	offset 8   uint32 BE  length H of the header
//	offset 12  header: H bytes of JSON (Header)
//	           the store snapshot: Header.SnapshotBytes bytes, in the
//	           store's own snapshot format (kvnode/core)
//	           "KVBKEND1"                 8 bytes
//	           SHA-256 of every byte before the trailer's magic, 32 bytes
//
// The checksum comes last so that a backup streams as it is read from the
// snapshot, in one pass; a reader trusts nothing it read until Verify has
// seen the end.
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// FormatVersion is the version this package writes and reads.
const FormatVersion = 1

const (
	magic        = "KVBACKUP"
	trailerMagic = "KVBKEND1"
	// maxHeader bounds the header a reader accepts: a few hundred bytes
	// are written, and a reader must not allocate what a damaged or
	// hostile length field says.
	maxHeader = 64 << 10
)

// ContentType is the media type of a backup over HTTP.
const ContentType = "application/vnd.kvstore.backup"

// HTTP headers of GET /v1/cluster/backup. The checksum is a trailer: it is
// known only at the end of the stream.
const (
	HeaderFormatVersion = "X-Kv-Backup-Format-Version"
	HeaderClusterID     = "X-Kv-Backup-Cluster-Id"
	HeaderIndex         = "X-Kv-Backup-Index"
	HeaderTerm          = "X-Kv-Backup-Term"
	HeaderKeys          = "X-Kv-Backup-Keys"
	TrailerSHA256       = "X-Kv-Backup-Sha256"
)

// Header says what a backup holds.
type Header struct {
	FormatVersion int `json:"formatVersion"`
	// ClusterID is the cluster the backup was taken from.
	ClusterID string `json:"clusterID"`
	// Index and Term are the Raft index and term of the last entry the
	// snapshot covers.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Keys is the number of keys in the snapshot.
	Keys uint64 `json:"keys"`
	// SnapshotBytes is the length of the store snapshot that follows.
	SnapshotBytes int64     `json:"snapshotBytes"`
	CreatedAt     time.Time `json:"createdAt"`
}

// ErrCorrupt means a backup is damaged, truncated, or not a backup.
var ErrCorrupt = errors.New("backup: corrupt")

// Writer streams a backup. Write the snapshot's bytes to it, then Close,
// which appends the checksum.
type Writer struct {
	w       io.Writer
	h       hash.Hash
	want    int64
	written int64
	closed  bool
	sum     []byte
}

// NewWriter writes the header to w and returns the writer for the
// snapshot that follows.
func NewWriter(w io.Writer, hdr Header) (*Writer, error) {
	hdr.FormatVersion = FormatVersion
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	bw := &Writer{w: w, h: sha256.New(), want: hdr.SnapshotBytes}
	var pre [12]byte
	copy(pre[:], magic)
	binary.BigEndian.PutUint32(pre[8:], uint32(len(js)))
	if err := bw.write(pre[:]); err != nil {
		return nil, err
	}
	if err := bw.write(js); err != nil {
		return nil, err
	}
	return bw, nil
}

func (b *Writer) write(p []byte) error {
	if _, err := b.w.Write(p); err != nil {
		return err
	}
	b.h.Write(p)
	return nil
}

// Write implements io.Writer for the snapshot's bytes.
func (b *Writer) Write(p []byte) (int, error) {
	if b.written+int64(len(p)) > b.want {
		return 0, fmt.Errorf("backup: the snapshot is longer than the %d bytes the header announced", b.want)
	}
	if err := b.write(p); err != nil {
		return 0, err
	}
	b.written += int64(len(p))
	return len(p), nil
}

// Close writes the trailer. It fails when fewer snapshot bytes were
// written than the header announced.
func (b *Writer) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.written != b.want {
		return fmt.Errorf("backup: %d snapshot bytes written, the header announced %d", b.written, b.want)
	}
	b.sum = b.h.Sum(nil)
	if _, err := io.WriteString(b.w, trailerMagic); err != nil {
		return err
	}
	_, err := b.w.Write(b.sum)
	return err
}

// Sum is the checksum, hex-encoded, once Close has run.
func (b *Writer) Sum() string { return hex.EncodeToString(b.sum) }

// Reader reads a backup: its header, then its snapshot, then Check
// verifies the checksum. Nothing read is to be trusted before Check
// returns nil.
type Reader struct {
	raw  io.Reader
	h    hash.Hash
	hdr  Header
	body *io.LimitedReader
}

// hashed passes reads through and hashes exactly the bytes they return.
type hashed struct {
	r io.Reader
	h hash.Hash
}

func (x *hashed) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	x.h.Write(p[:n])
	return n, err
}

// Open reads a backup's header from r. It checks the magic, the version
// and the header's shape; the checksum is checked by Check, at the end.
func Open(r io.Reader) (*Reader, error) {
	b := &Reader{raw: r, h: sha256.New()}
	in := &hashed{r: r, h: b.h}
	var pre [12]byte
	if _, err := io.ReadFull(in, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: no backup header: %v", ErrCorrupt, err)
	}
	if string(pre[:8]) != magic {
		return nil, fmt.Errorf("%w: not a kvnode backup (it starts with %q)", ErrCorrupt, pre[:8])
	}
	n := binary.BigEndian.Uint32(pre[8:])
	if n == 0 || n > maxHeader {
		return nil, fmt.Errorf("%w: header length %d", ErrCorrupt, n)
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(in, js); err != nil {
		return nil, fmt.Errorf("%w: header truncated: %v", ErrCorrupt, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b.hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	if b.hdr.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("backup: format version %d; this kvnode reads version %d", b.hdr.FormatVersion, FormatVersion)
	}
	if b.hdr.SnapshotBytes < 0 {
		return nil, fmt.Errorf("%w: snapshot length %d", ErrCorrupt, b.hdr.SnapshotBytes)
	}
	b.body = &io.LimitedReader{R: in, N: b.hdr.SnapshotBytes}
	return b, nil
}

// Header is what the backup says it holds.
func (b *Reader) Header() Header { return b.hdr }

// Snapshot returns the store snapshot: exactly Header().SnapshotBytes.
func (b *Reader) Snapshot() io.Reader { return b.body }

// Check reads what is left of the snapshot and the trailer, and verifies
// the checksum and that nothing follows. It returns the checksum.
func (b *Reader) Check() (string, error) {
	if _, err := io.Copy(io.Discard, b.body); err != nil {
		return "", fmt.Errorf("%w: snapshot: %v", ErrCorrupt, err)
	}
	if b.body.N > 0 {
		return "", fmt.Errorf("%w: truncated: %d snapshot bytes missing", ErrCorrupt, b.body.N)
	}
	sum := b.h.Sum(nil)
	var tr [8 + sha256.Size]byte
	if _, err := io.ReadFull(b.raw, tr[:]); err != nil {
		return "", fmt.Errorf("%w: truncated before its checksum: %v", ErrCorrupt, err)
	}
	if string(tr[:8]) != trailerMagic {
		return "", fmt.Errorf("%w: no checksum trailer where the header says the snapshot ends", ErrCorrupt)
	}
	if !bytes.Equal(tr[8:], sum) {
		return "", fmt.Errorf("%w: checksum mismatch: the file says %x, its contents hash to %x", ErrCorrupt, tr[8:], sum)
	}
	var extra [1]byte
	if n, _ := io.ReadFull(b.raw, extra[:]); n > 0 {
		return "", fmt.Errorf("%w: bytes after the checksum trailer", ErrCorrupt)
	}
	return hex.EncodeToString(sum), nil
}

// Verify reads a whole backup and checks it; it returns the header and
// the checksum.
func Verify(r io.Reader) (Header, string, error) {
	b, err := Open(r)
	if err != nil {
		return Header{}, "", err
	}
	sum, err := b.Check()
	return b.hdr, sum, err
}
