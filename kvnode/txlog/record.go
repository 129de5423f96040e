package txlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// segmentMagicPrefix and a digit, the format version, start a segment.
	segmentMagicPrefix = "KVTXLOG"
	segmentMagicV1     = "KVTXLOG1"
	segmentMagicV2     = "KVTXLOG2"
	segmentHeader      = 16
	recordHeader       = 8
	bodyFixed          = 8 + 8 + 1 + 8

	// pageBytes is the unit a power cut is assumed to tear writes at. The
	// header and each durable mark of a version 2 segment have a page of
	// their own, so that rewriting a mark can never damage the header or
	// the other mark, and no record shares a page with either.
	pageBytes = 4096
	// recordsV2 is where the records of a version 2 segment start: after
	// the header page and the two durable-mark pages.
	recordsV2 = 3 * pageBytes

	markMagic = "KVTXMARK"
	markBytes = 8 + 8 + 8 + 8 + 4
)

// MaxRecordBytes is the largest record the log writes or reads: far above
// any value the node accepts by default; a larger length is a torn or
// corrupt header, and the writer refuses it (ErrRecordTooLarge). A node's
// key and value limits must leave an entry under it.
const MaxRecordBytes = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is returned by decodeRecord for bytes that are not a whole,
// intact record.
var errBadRecord = errors.New("bad record")

// appendRecord appends the encoding of l to b.
func appendRecord(b []byte, l *raft.Log) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, l.Index)
	b = binary.LittleEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(at))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = append(b, l.Extensions...)
	body := len(b) - start - recordHeader
	binary.LittleEndian.PutUint32(b[start:], uint32(body))
	crc := crc32.Update(0, castagnoli, b[start:start+4])
	crc = crc32.Update(crc, castagnoli, b[start+recordHeader:])
	binary.LittleEndian.PutUint32(b[start+4:], crc)
	return b
}

// recordBodyBytes is the length appendRecord writes into l's header: the
// bound decodeRecord checks, so the writer can refuse what the reader would.
func recordBodyBytes(l *raft.Log) uint64 {
	n := uint64(len(l.Data))
	var varint [binary.MaxVarintLen64]byte
	return bodyFixed + uint64(binary.PutUvarint(varint[:], n)) + n + uint64(len(l.Extensions))
}

// decodeRecord decodes the record at the start of b into l and returns its
// encoded size. It returns errBadRecord when b does not start with a whole
// record whose checksum matches. l's byte slices are copies, never aliases
// of b.
func decodeRecord(b []byte, l *raft.Log) (int, error) {
	if len(b) < recordHeader {
		return 0, fmt.Errorf("%w: %d bytes left, header needs %d", errBadRecord, len(b), recordHeader)
	}
	n := binary.LittleEndian.Uint32(b)
	if n < bodyFixed+1 || n > MaxRecordBytes {
		return 0, fmt.Errorf("%w: length %d", errBadRecord, n)
	}
	if uint64(len(b)-recordHeader) < uint64(n) {
		return 0, fmt.Errorf("%w: length %d but %d bytes left", errBadRecord, n, len(b)-recordHeader)
	}
	body := b[recordHeader : recordHeader+int(n)]
	crc := crc32.Update(0, castagnoli, b[:4])
	crc = crc32.Update(crc, castagnoli, body)
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errBadRecord)
	}
	l.Index = binary.LittleEndian.Uint64(body)
	l.Term = binary.LittleEndian.Uint64(body[8:])
	l.Type = raft.LogType(body[16])
	at := int64(binary.LittleEndian.Uint64(body[17:]))
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	dlen, k := binary.Uvarint(body[bodyFixed:])
	if k <= 0 || dlen > uint64(len(body)-bodyFixed-k) {
		return 0, fmt.Errorf("%w: data length", errBadRecord)
	}
	rest := body[bodyFixed+k:]
	l.Data = cloneOrNil(rest[:dlen])
	l.Extensions = cloneOrNil(rest[dlen:])
	return recordHeader + int(n), nil
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// markOffset is where the durable mark with sequence number seq is
// written: marks alternate between the two mark pages, so that the one
// being rewritten is never the only valid one.
func markOffset(seq uint64) int64 { return pageBytes * int64(1+seq%2) }

// encodeMark encodes a durable mark: magic, sequence number, the segment's
// base index, the offset every record before which is durable, and a
// CRC-32C of those 32 bytes.
func encodeMark(seq, base uint64, end int64) []byte {
	b := make([]byte, 0, markBytes)
	b = append(b, markMagic...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint64(b, base)
	b = binary.LittleEndian.AppendUint64(b, uint64(end))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readMarks returns the valid durable mark with the highest sequence
// number in a version 2 segment's data, and false when neither mark page
// holds a valid one.
func readMarks(data []byte, base uint64) (seq uint64, end int64, ok bool) {
	for slot := uint64(0); slot < 2; slot++ {
		off := markOffset(slot)
		if int64(len(data)) < off+markBytes {
			continue
		}
		b := data[off : off+markBytes]
		if string(b[:8]) != markMagic || crc32.Checksum(b[:32], castagnoli) != binary.LittleEndian.Uint32(b[32:]) {
			continue
		}
		s := binary.LittleEndian.Uint64(b[8:])
		e := int64(binary.LittleEndian.Uint64(b[24:]))
		if s%2 != slot || binary.LittleEndian.Uint64(b[16:]) != base || e < recordsV2 {
			continue
		}
		if !ok || s > seq {
			seq, end, ok = s, e, true
		}
	}
	return seq, end, ok
}
