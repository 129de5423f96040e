package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func sample(t testing.TB, snapshot []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{ClusterID: "c1", Index: 42, Term: 3, Keys: 2, SnapshotBytes: int64(len(snapshot)), CreatedAt: time.Unix(1700000000, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(snapshot); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	snap := bytes.Repeat([]byte("snapshot bytes "), 1000)
	b := sample(t, snap)
	r, err := Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r.Snapshot())
	if err != nil || !bytes.Equal(got, snap) {
		t.Fatalf("snapshot read back: %d bytes, %v", len(got), err)
	}
	if _, err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.ClusterID != "c1" || h.Index != 42 || h.Term != 3 || h.Keys != 2 || h.FormatVersion != FormatVersion {
		t.Fatalf("header %+v", h)
	}
}

func TestWriterHoldsToTheAnnouncedLength(t *testing.T) {
	w, err := NewWriter(io.Discard, Header{SnapshotBytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("12345")); err == nil {
		t.Fatal("wrote more than announced")
	}
	if _, err := w.Write([]byte("123")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("closed with fewer bytes than announced")
	}
}

// Every damage is refused: a flipped bit anywhere, a missing tail, bytes
// after the trailer, another version, a hostile header length.
func TestDamageIsRefused(t *testing.T) {
	good := sample(t, []byte("0123456789abcdef"))
	cases := map[string][]byte{
		"truncated":   good[:len(good)-1],
		"extra":       append(append([]byte(nil), good...), 'x'),
		"empty":       nil,
		"huge header": func() []byte { c := append([]byte(nil), good...); binary.BigEndian.PutUint32(c[8:], 1<<31); return c }(),
		"other version": func() []byte {
			return []byte(strings.Replace(string(good), `"formatVersion":1`, `"formatVersion":9`, 1))
		}(),
	}
	for i := range good {
		c := append([]byte(nil), good...)
		c[i] ^= 0x01
		cases[fmt.Sprintf("flip@%d", i)] = c
	}
	for name, b := range cases {
		if _, _, err := Verify(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := Verify(bytes.NewReader(good[:len(good)-1])); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v, want ErrCorrupt", err)
	}
}

// Whatever the bytes, reading a backup neither panics nor allocates what
// a length field claims, and accepts nothing but a valid backup.
func FuzzVerify(f *testing.F) {
	f.Add(sample(f, []byte("abc")))
	f.Add([]byte("KVBACKUP\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		hdr, _, err := Verify(bytes.NewReader(b))
		if err == nil && hdr.FormatVersion != FormatVersion {
			t.Fatalf("accepted a backup of version %d", hdr.FormatVersion)
		}
	})
}
