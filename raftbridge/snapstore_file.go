package raftbridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
)

// Defaults for the zero values of FileSnapshotStoreConfig.
const (
	// DefaultSnapshotStoreRetain is the default number of complete
	// snapshots beyond which a FileSnapshotStore takes no more transfers.
	DefaultSnapshotStoreRetain = 4
	// DefaultSnapshotStoreMaxPartial is the default number of snapshots a
	// FileSnapshotStore writes at once.
	DefaultSnapshotStoreMaxPartial = 4
)

// FileSnapshotStoreConfig configures a FileSnapshotStore.
type FileSnapshotStoreConfig struct {
	// Dir is the directory holding the snapshot files; it is created if
	// missing. The store owns it: files it did not create are left alone
	// but count for nothing.
	Dir string
	// MaxBytes bounds each snapshot file. Default (0): no bound of the
	// store's own; the bridge still refuses incoming snapshots beyond
	// Config.MaxSnapshotBytes before creating a file.
	MaxBytes int64
	// Retain bounds the complete snapshots the store holds for incoming
	// transfers: with Retain of them in the directory (the application's
	// own included), Create refuses with ErrSnapshotStoreFull until the
	// application removes one it no longer needs (Remove). The store
	// never deletes a complete snapshot by itself, so no transfer, from
	// whichever member, can take away the snapshot the node's storage
	// refers to. Save is not bounded: the application's own snapshots are
	// its to keep and remove. Default DefaultSnapshotStoreRetain.
	Retain int
	// MaxPartial bounds the snapshots being written at once (incoming
	// transfers and Save calls); Create refuses more with
	// ErrSnapshotStoreFull. With Retain it bounds the files incoming
	// transfers can leave in Dir.
	// Default DefaultSnapshotStoreMaxPartial.
	MaxPartial int
}

// FileSnapshotStore is a SnapshotStore keeping each snapshot in a file of
// one directory.
//
// File names are built from numbers only: "<term>-<index>-<id>.snap" for a
// complete snapshot and ".part" for one being written, each number as 16
// hex digits, where id is random and tells apart snapshots of the same term
// and index. Nothing from the network or from a reference ever becomes a
// path other than through these numbers, and every file operation goes
// through an os.Root on the directory, so a reference cannot reach outside
// it. Partial files left by a crash are removed by NewFileSnapshotStore.
//
// A reference (version 1) is exactly 40 bytes:
//
//	offset size
//	 0     4   "RBS" and version byte 1
//	 4     8   term (big-endian)
//	12     8   index
//	20     8   id (never 0)
//	28     8   size of the data in bytes
//	36     4   CRC-32C (Castagnoli) of the data
//
// Open refuses anything else (ErrSnapshotReference), and a file whose size
// differs from the reference's.
type FileSnapshotStore struct {
	root *os.Root
	cfg  FileSnapshotStoreConfig

	mu      sync.Mutex // serialises pruning and counts partials
	partial int
}

var _ SnapshotStore = (*FileSnapshotStore)(nil)

// NewFileSnapshotStore opens (creating if needed) the directory of a
// FileSnapshotStore and removes the partial files a crash left in it.
func NewFileSnapshotStore(cfg FileSnapshotStoreConfig) (*FileSnapshotStore, error) {
	switch {
	case cfg.Dir == "":
		return nil, fmt.Errorf("%w: FileSnapshotStoreConfig.Dir is required", ErrInvalidConfig)
	case cfg.MaxBytes < 0 || cfg.Retain < 0 || cfg.MaxPartial < 0:
		return nil, fmt.Errorf("%w: FileSnapshotStoreConfig limits must not be negative", ErrInvalidConfig)
	}
	if cfg.Retain == 0 {
		cfg.Retain = DefaultSnapshotStoreRetain
	}
	if cfg.MaxPartial == 0 {
		cfg.MaxPartial = DefaultSnapshotStoreMaxPartial
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	s := &FileSnapshotStore{root: root, cfg: cfg}
	names, err := s.names()
	if err != nil {
		root.Close()
		return nil, err
	}
	for _, n := range names {
		if n.partial {
			if err := root.Remove(n.file()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				root.Close()
				return nil, fmt.Errorf("raftbridge: snapshot store: remove stale partial snapshot: %w", err)
			}
		}
	}
	return s, nil
}

// Close releases the directory. Sources and sinks already open keep
// working.
func (s *FileSnapshotStore) Close() error { return s.root.Close() }

// snapName identifies a snapshot file by numbers only.
type snapName struct {
	term, index, id uint64
	partial         bool
}

func (n snapName) file() string {
	ext := ".snap"
	if n.partial {
		ext = ".part"
	}
	return fmt.Sprintf("%016x-%016x-%016x%s", n.term, n.index, n.id, ext)
}

// parseSnapName parses a file name the store made; anything else is not
// one of its files.
func parseSnapName(name string) (snapName, bool) {
	var n snapName
	base, ok := strings.CutSuffix(name, ".snap")
	if !ok {
		if base, ok = strings.CutSuffix(name, ".part"); !ok {
			return n, false
		}
		n.partial = true
	}
	if len(base) != 3*16+2 || base[16] != '-' || base[33] != '-' {
		return n, false
	}
	for i, p := range []*uint64{&n.term, &n.index, &n.id} {
		v, ok := parseHex16(base[17*i : 17*i+16])
		if !ok {
			return n, false
		}
		*p = v
	}
	return n, n.id != 0
}

func parseHex16(s string) (uint64, bool) {
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// names lists the store's files in its directory.
func (s *FileSnapshotStore) names() ([]snapName, error) {
	d, err := s.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	var out []snapName
	for _, e := range ents {
		if n, ok := parseSnapName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, n)
		}
	}
	return out, nil
}

// snapshotRefV1 is the magic and version of a version 1 reference.
const snapshotRefV1 = "RBS\x01"

// SnapshotRefSize is the length of a FileSnapshotStore reference.
const SnapshotRefSize = 40

type snapRef struct {
	snapName
	size int64
	crc  uint32
}

func (r *snapRef) marshal() []byte {
	b := make([]byte, 0, SnapshotRefSize)
	b = append(b, snapshotRefV1...)
	b = binary.BigEndian.AppendUint64(b, r.term)
	b = binary.BigEndian.AppendUint64(b, r.index)
	b = binary.BigEndian.AppendUint64(b, r.id)
	b = binary.BigEndian.AppendUint64(b, uint64(r.size))
	return binary.BigEndian.AppendUint32(b, r.crc)
}

func parseSnapRef(b []byte) (*snapRef, error) {
	if len(b) != SnapshotRefSize || string(b[:4]) != snapshotRefV1 {
		return nil, fmt.Errorf("%w: %d bytes that are not a version 1 reference", ErrSnapshotReference, len(b))
	}
	r := &snapRef{
		snapName: snapName{
			term:  binary.BigEndian.Uint64(b[4:12]),
			index: binary.BigEndian.Uint64(b[12:20]),
			id:    binary.BigEndian.Uint64(b[20:28]),
		},
		crc: binary.BigEndian.Uint32(b[36:40]),
	}
	size := binary.BigEndian.Uint64(b[28:36])
	if r.id == 0 || size > 1<<62 {
		return nil, fmt.Errorf("%w: id 0 or size out of range", ErrSnapshotReference)
	}
	r.size = int64(size)
	return r, nil
}

// SnapshotRefInfo is what a FileSnapshotStore reference says.
type SnapshotRefInfo struct {
	Term, Index uint64
	Size        int64
	CRC32C      uint32
}

// ParseRef decodes a reference without touching the directory.
func (s *FileSnapshotStore) ParseRef(ref []byte) (SnapshotRefInfo, error) {
	r, err := parseSnapRef(ref)
	if err != nil {
		return SnapshotRefInfo{}, err
	}
	return SnapshotRefInfo{Term: r.term, Index: r.index, Size: r.size, CRC32C: r.crc}, nil
}

// Open implements SnapshotStore: it opens the file a reference names. The
// returned source's ReaderAt may be wrapped in io.NewSectionReader to read
// the snapshot as a stream (the application does so to restore a received
// snapshot).
func (s *FileSnapshotStore) Open(ref []byte) (SnapshotSource, error) {
	r, err := parseSnapRef(ref)
	if err != nil {
		return nil, err
	}
	fi, err := s.root.Lstat(r.file())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshotReference, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrSnapshotReference, r.file())
	}
	f, err := s.root.Open(r.file())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshotReference, err)
	}
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != r.size {
		f.Close()
		return nil, fmt.Errorf("%w: %s does not hold the %d bytes of the reference", ErrSnapshotReference, r.file(), r.size)
	}
	return &fileSource{File: f, size: r.size, crc: r.crc}, nil
}

type fileSource struct {
	*os.File
	size int64
	crc  uint32
}

func (f *fileSource) Size() int64    { return f.size }
func (f *fileSource) CRC32C() uint32 { return f.crc }

// Remove deletes the snapshot a reference names. Removing one that is
// gone is not an error.
func (s *FileSnapshotStore) Remove(ref []byte) error {
	r, err := parseSnapRef(ref)
	if err != nil {
		return err
	}
	if err := s.root.Remove(r.file()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	return nil
}

// Create implements SnapshotStore.
func (s *FileSnapshotStore) Create(t SnapshotTransfer) (SnapshotSink, error) {
	if t.Size < 0 || (s.cfg.MaxBytes > 0 && t.Size > s.cfg.MaxBytes) {
		return nil, fmt.Errorf("%w: %d bytes exceed the store's maximum %d", ErrSnapshotSize, t.Size, s.cfg.MaxBytes)
	}
	if n, err := s.complete(); err != nil {
		return nil, err
	} else if n >= s.cfg.Retain {
		return nil, fmt.Errorf("%w: %d complete snapshots (Retain %d); remove those no longer needed", ErrSnapshotStoreFull, n, s.cfg.Retain)
	}
	k, err := s.create(t.Term, t.Index, t.Size)
	if err != nil {
		return nil, err
	}
	k.writeBehind = true
	return k, nil
}

// create opens a new partial file; size < 0 means unknown (Save).
func (s *FileSnapshotStore) create(term, index uint64, size int64) (*fileSink, error) {
	s.mu.Lock()
	if s.partial >= s.cfg.MaxPartial {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d snapshots are being written", ErrSnapshotStoreFull, s.partial)
	}
	s.partial++
	s.mu.Unlock()
	n := snapName{term: term, index: index, id: rand.Uint64() | 1, partial: true}
	f, err := s.root.OpenFile(n.file(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		s.donePartial()
		return nil, fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	return &fileSink{s: s, f: f, name: n, size: size}, nil
}

func (s *FileSnapshotStore) donePartial() {
	s.mu.Lock()
	s.partial--
	s.mu.Unlock()
}

// Save writes a snapshot of the application's own (taken at term and
// index) from r into the store and returns its reference, to be put in
// the raftpb.Snapshot's Data. The data is fsynced before Save returns.
func (s *FileSnapshotStore) Save(term, index uint64, r io.Reader) ([]byte, error) {
	k, err := s.create(term, index, -1)
	if err != nil {
		return nil, err
	}
	if s.cfg.MaxBytes > 0 {
		r = io.LimitReader(r, s.cfg.MaxBytes+1)
	}
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(k, r, buf); err != nil {
		k.Abort()
		return nil, fmt.Errorf("raftbridge: snapshot store: save: %w", err)
	}
	if s.cfg.MaxBytes > 0 && k.written > s.cfg.MaxBytes {
		k.Abort()
		return nil, fmt.Errorf("%w: the snapshot exceeds the store's maximum %d", ErrSnapshotSize, s.cfg.MaxBytes)
	}
	return k.Commit()
}

// fileSink is a partial snapshot file being written.
type fileSink struct {
	s       *FileSnapshotStore
	f       *os.File
	name    snapName
	size    int64 // announced size, or -1
	written int64
	crc     uint32
	done    bool
	// Write-behind (incoming snapshots only: a saved one is about to be
	// read by the sender): writeback was started up to started, and the
	// page cache dropped up to dropped.
	writeBehind      bool
	started, dropped int64
}

// writeBehindBytes is how far a snapshot being written runs ahead of the
// data whose writeback it starts (and, one step later, waits for and
// drops from the page cache). So a transfer keeps about twice this much
// of its file in the page cache instead of the whole snapshot, does not
// evict the node's hot data, and its final fsync has little left to do.
const writeBehindBytes = 8 << 20

func (k *fileSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, fmt.Errorf("raftbridge: snapshot store: write after commit or abort")
	}
	if k.size >= 0 && k.written+int64(len(p)) > k.size {
		return 0, fmt.Errorf("%w: more than the announced %d bytes", ErrSnapshotSize, k.size)
	}
	n, err := k.f.Write(p)
	k.crc = crc32.Update(k.crc, castagnoli, p[:n])
	k.written += int64(n)
	if k.writeBehind && k.written-k.started >= writeBehindBytes {
		startWriteback(k.f, k.started, k.written-k.started)
		if k.started > k.dropped {
			dropBehind(k.f, k.dropped, k.started-k.dropped)
			k.dropped = k.started
		}
		k.started = k.written
	}
	return n, err
}

func (k *fileSink) Commit() ([]byte, error) {
	if k.done {
		return nil, fmt.Errorf("raftbridge: snapshot store: commit after commit or abort")
	}
	if k.size >= 0 && k.written != k.size {
		k.Abort()
		return nil, fmt.Errorf("%w: %d bytes written, %d announced", ErrSnapshotSize, k.written, k.size)
	}
	s := k.s
	if err := k.f.Sync(); err != nil {
		k.Abort()
		return nil, fmt.Errorf("raftbridge: snapshot store: fsync: %w", err)
	}
	if err := k.f.Close(); err != nil {
		k.f = nil
		k.Abort()
		return nil, fmt.Errorf("raftbridge: snapshot store: close: %w", err)
	}
	final := k.name
	final.partial = false
	if err := s.root.Rename(k.name.file(), final.file()); err != nil {
		k.f = nil
		k.Abort()
		return nil, fmt.Errorf("raftbridge: snapshot store: rename: %w", err)
	}
	k.done = true
	s.donePartial()
	if d, err := s.root.Open("."); err == nil {
		// Make the rename durable; a failure here leaves a complete file
		// that may lose its name in a crash, no worse than no snapshot.
		_ = d.Sync()
		d.Close()
	}
	ref := snapRef{snapName: final, size: k.written, crc: k.crc}
	return ref.marshal(), nil
}

func (k *fileSink) Abort() error {
	if k.done {
		return nil
	}
	k.done = true
	if k.f != nil {
		k.f.Close()
	}
	err := k.s.root.Remove(k.name.file())
	k.s.donePartial()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("raftbridge: snapshot store: %w", err)
	}
	return nil
}

// complete counts the complete snapshots in the directory.
func (s *FileSnapshotStore) complete() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.names()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if !name.partial {
			n++
		}
	}
	return n, nil
}
