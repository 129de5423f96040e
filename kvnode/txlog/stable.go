package txlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// errNotFound is what hashicorp/raft expects from a StableStore for a
// missing key: it compares the message, not the value.
var errNotFound = errors.New("not found")

const stableMagic = "KVSTBL01"

// stableFile is a small map persisted as a whole on every change: the magic,
// then per entry uvarint key length, key, uvarint value length, value, and a
// trailing CRC-32C of everything before it. It is written to a temporary
// file, fsynced, renamed over the old one, and the directory fsynced, so a
// crash leaves either the old or the new map, never a mix. Raft writes it
// only on term changes and votes.
type stableFile struct {
	mu   sync.Mutex
	fs   fileSystem
	path string
	m    map[string][]byte
	// spare is set while the spare is known to be whole: it is looked at
	// on disk only when this is not set.
	spare bool
}

// spareBytes is the size of the stable file's spare: a file that is kept
// only to be removed when the volume is so full that the stable file's
// new copy does not fit. Raft panics when it cannot record a term, and a
// node that panics at every election never gets out of a full disk.
const spareBytes = 64 << 10

// ensureSpare makes the spare whole when it is missing or short (a crash
// can keep its creation and lose its allocation) and there is room for
// it. It need not be durable: a spare lost in a crash is made again at
// the next Open.
func (s *stableFile) ensureSpare() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spare {
		return
	}
	spare := s.path + ".spare"
	if b, err := s.fs.ReadFile(spare); err == nil && len(b) >= spareBytes {
		s.spare = true
		return
	}
	f, err := s.fs.Create(spare)
	if err != nil {
		return
	}
	err = f.Allocate(spareBytes)
	_ = f.Close() // nothing in it to keep
	if err != nil {
		_ = s.fs.Remove(spare)
		return
	}
	s.spare = true
}

func openStable(fsys fileSystem, dir string) (*stableFile, error) {
	s := &stableFile{fs: fsys, path: filepath.Join(dir, "stable"), m: map[string][]byte{}}
	b, err := fsys.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		s.ensureSpare()
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) < len(stableMagic)+4 || string(b[:len(stableMagic)]) != stableMagic {
		return nil, fmt.Errorf("%s: not a stable-state file", s.path)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%s: checksum mismatch", s.path)
	}
	r := bytes.NewReader(body[len(stableMagic):])
	for r.Len() > 0 {
		k, err := readChunk(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.path, err)
		}
		v, err := readChunk(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.path, err)
		}
		s.m[string(k)] = v
	}
	s.ensureSpare()
	return s, nil
}

func readChunk(r *bytes.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n > uint64(r.Len()) {
		return nil, fmt.Errorf("truncated entry")
	}
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b, nil
}

func (s *stableFile) get(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok
}

func (s *stableFile) set(key string, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[key]
	s.m[key] = append([]byte(nil), val...)
	err := s.persistLocked()
	if isNoSpace(err) && s.fs.Remove(s.path+".spare") == nil {
		s.spare = false
		err = s.persistLocked()
	}
	if err != nil {
		if had {
			s.m[key] = old
		} else {
			delete(s.m, key)
		}
		return err
	}
	return nil
}

func (s *stableFile) persistLocked() error {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte(stableMagic)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(s.m[k])))
		b = append(b, s.m[k]...)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return writeFileAtomic(s.fs, s.path, b)
}

// writeFileAtomic writes b to path so that a crash leaves the old content or
// the new, never a mix: temp file, fsync, rename, fsync the directory. A
// failure before the rename leaves the old file in place and removes the
// temporary one, so that a full volume gets its space back; only then may
// the error say ENOSPC (see Log.refuse): one after the rename does not,
// since the rename may or may not be durable.
func writeFileAtomic(fsys fileSystem, path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := fsys.Create(tmp)
	if err != nil {
		_ = fsys.Remove(tmp) // may not exist; the error is the create's
		return err
	}
	_, err = f.WriteAt(b, 0)
	// On disk before the rename can be: a rename that reached the disk
	// ahead of the data would replace the old state with a torn file.
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		_ = fsys.Remove(tmp) // the old file is intact; the error is the write's
		return err
	}
	if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("sync %s after renaming %s over it: %v", filepath.Dir(path), tmp, err)
	}
	return nil
}
