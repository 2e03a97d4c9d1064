package raftstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Snapshot data files live in <dir>/snap, one per snapshot, named
// <term>-<index>-<crc>.snap in fixed-width hex. The CRC in the name keeps two
// different snapshots at the same index and term (possible only for index 0)
// from replacing each other's file.
//
// File layout (big-endian):
//
//	0   [8]byte "RAFTSNAP"
//	8   uint32  file format version (1)
//	12  uint32  CRC32C of the data
//	16  uint64  snapshot index
//	24  uint64  snapshot term
//	32  uint64  data length
//	40  uint32  CRC32C of bytes 0..40
//	44  data
const (
	snapMagic      = "RAFTSNAP"
	snapFileFormat = 1
	snapHeaderLen  = 44
	snapSuffix     = ".snap"
	snapTmpSuffix  = ".tmp"
	snapDirName    = "snap"
	pebbleDirName  = "db"
)

func snapFileName(index, term uint64, crc uint32) string {
	return fmt.Sprintf("%016x-%016x-%08x%s", term, index, crc, snapSuffix)
}

// parseSnapFileName returns the index of a snapshot file name, or ok=false
// for names that are not snapshot files.
func parseSnapFileName(name string) (index uint64, ok bool) {
	var term uint64
	var crc uint32
	if !strings.HasSuffix(name, snapSuffix) || len(name) != 16+1+16+1+8+len(snapSuffix) {
		return 0, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x-%08x.snap", &term, &index, &crc); err != nil {
		return 0, false
	}
	return index, true
}

func snapHeader(index, term uint64, crc uint32, size uint64) []byte {
	h := make([]byte, 0, snapHeaderLen)
	h = append(h, snapMagic...)
	h = binary.BigEndian.AppendUint32(h, snapFileFormat)
	h = binary.BigEndian.AppendUint32(h, crc)
	h = binary.BigEndian.AppendUint64(h, index)
	h = binary.BigEndian.AppendUint64(h, term)
	h = binary.BigEndian.AppendUint64(h, size)
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

// snapDir is the snapshot directory on the store's file system (the OS, or
// an in-memory or error-injecting one in tests). Every file operation of the
// store goes through fs, so that crash tests see all of them.
type snapDir struct {
	fs  vfs.FS
	dir string
}

func (d snapDir) path(name string) string { return d.fs.PathJoin(d.dir, name) }

// write writes data durably under its final name and returns the record
// describing it. The order is what makes it crash-safe: write a temp file,
// fsync it, rename it to its final name, fsync the directory. So the final
// name never refers to a partial file, and once write returns the file and
// its name survive a power loss; only then may a record naming it be
// committed. A crash before that leaves a temp file or an unreferenced
// snapshot file, which prune removes.
func (d snapDir) write(index, term uint64, data []byte) (*snapRecord, error) {
	crc := crc32.Checksum(data, castagnoli)
	rec := &snapRecord{index: index, term: term, size: uint64(len(data)), crc: crc, file: snapFileName(index, term, crc)}
	// writeMu serialises snapshot writes, so a fixed temp name cannot
	// collide; Create replaces a temp file left by a crash.
	tmp := d.path(rec.file + snapTmpSuffix)
	f, err := d.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("raftstore: create snapshot file: %w", err)
	}
	fail := func(err error) (*snapRecord, error) {
		_ = f.Close()
		_ = d.fs.Remove(tmp)
		return nil, fmt.Errorf("raftstore: write snapshot file %s: %w", tmp, err)
	}
	if _, err := f.Write(snapHeader(index, term, crc, rec.size)); err != nil {
		return fail(err)
	}
	if err := writeCopy(f, data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil { // a no-op with Options.NoSync (noSyncFS)
		return fail(fmt.Errorf("fsync: %w", err))
	}
	if err := f.Close(); err != nil {
		_ = d.fs.Remove(tmp)
		return nil, fmt.Errorf("raftstore: close snapshot file %s: %w", tmp, err)
	}
	if err := d.fs.Rename(tmp, d.path(rec.file)); err != nil {
		_ = d.fs.Remove(tmp)
		return nil, fmt.Errorf("raftstore: rename snapshot file: %w", err)
	}
	if err := syncDir(d.fs, d.dir); err != nil {
		return nil, err
	}
	return rec, nil
}

// writeCopy writes data through a bounded scratch buffer. A vfs.File may
// clobber the buffer it is given (Pebble's MemFS does, on purpose, in
// builds with invariants, such as -race), and data is the caller's and stays
// cached as the latest snapshot, so it must not be handed to Write itself.
func writeCopy(f vfs.File, data []byte) error {
	buf := make([]byte, min(len(data), 1<<20))
	for len(data) > 0 {
		n := copy(buf, data)
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// syncDir makes the directory entries (creations, renames, removals) in dir
// durable.
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("raftstore: open directory for fsync: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("raftstore: fsync directory %s: %w", dir, err)
	}
	return nil
}

// open opens the file of rec and checks its header against rec. The caller
// reads rec.size bytes of data from the returned reader.
func (d snapDir) open(rec *snapRecord) (vfs.File, error) {
	path := d.path(rec.file)
	f, err := d.fs.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: snapshot file %s is missing: %w", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("raftstore: open snapshot file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("raftstore: stat snapshot file: %w", err)
	}
	corrupt := func(why string) (vfs.File, error) {
		_ = f.Close()
		return nil, fmt.Errorf("%w: snapshot file %s: %s", ErrCorrupt, path, why)
	}
	if st.Size() != snapHeaderLen+int64(rec.size) {
		return corrupt(fmt.Sprintf("size %d, want %d", st.Size(), snapHeaderLen+int64(rec.size)))
	}
	h := make([]byte, snapHeaderLen)
	if _, err := io.ReadFull(f, h); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("raftstore: read snapshot header %s: %w", path, err)
	}
	switch {
	case !bytes.Equal(h[:8], []byte(snapMagic)):
		return corrupt("bad magic")
	case crc32.Checksum(h[:40], castagnoli) != binary.BigEndian.Uint32(h[40:]):
		return corrupt("header checksum mismatch")
	case binary.BigEndian.Uint32(h[8:]) != snapFileFormat:
		return corrupt(fmt.Sprintf("unknown file format %d", binary.BigEndian.Uint32(h[8:])))
	case binary.BigEndian.Uint32(h[12:]) != rec.crc,
		binary.BigEndian.Uint64(h[16:]) != rec.index,
		binary.BigEndian.Uint64(h[24:]) != rec.term,
		binary.BigEndian.Uint64(h[32:]) != rec.size:
		return corrupt("header disagrees with the snapshot record")
	}
	return f, nil
}

// read loads and verifies the data of rec.
func (d snapDir) read(rec *snapRecord) ([]byte, error) {
	f, err := d.open(rec)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, rec.size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("raftstore: read snapshot file %s: %w", rec.file, err)
	}
	if crc32.Checksum(data, castagnoli) != rec.crc {
		return nil, fmt.Errorf("%w: snapshot file %s: data checksum mismatch", ErrCorrupt, d.path(rec.file))
	}
	return data, nil
}

// verify checks the data of rec in constant memory.
func (d snapDir) verify(rec *snapRecord) error {
	f, err := d.open(rec)
	if err != nil {
		return err
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("raftstore: read snapshot file %s: %w", rec.file, err)
	}
	if uint64(n) != rec.size || h.Sum32() != rec.crc {
		return fmt.Errorf("%w: snapshot file %s: data checksum mismatch", ErrCorrupt, d.path(rec.file))
	}
	return nil
}

// prune deletes leftovers in the directory: temp files, all but the retain-1
// newest snapshots older than the current one and, unless keepNewer, files
// of snapshots at or above the current index that are not the current one
// (an install that crashed before its record was committed). It runs only
// after the current record is durable, so it never removes the file that the
// store needs. Open passes keepNewer: a newer file might also mean that the
// store lost its latest writes, and then it is worth keeping for an
// operator; the next install removes it.
func (d snapDir) prune(current *snapRecord, retain int, keepNewer bool) (removed []string, err error) {
	names, err := d.fs.List(d.dir)
	if err != nil {
		return nil, fmt.Errorf("raftstore: list snapshot directory: %w", err)
	}
	type old struct {
		name  string
		index uint64
	}
	var older []old
	sort.Strings(names) // List's order is unspecified; keep the log stable
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, snapTmpSuffix):
			removed = append(removed, name)
		case name == current.file:
		default:
			index, ok := parseSnapFileName(name)
			switch {
			case !ok:
				// Not ours; leave it alone.
			case current.file == "" || index >= current.index:
				if !keepNewer {
					removed = append(removed, name)
				}
			default:
				older = append(older, old{name, index})
			}
		}
	}
	sort.Slice(older, func(i, j int) bool { return older[i].index > older[j].index })
	for i, o := range older {
		if i >= retain-1 {
			removed = append(removed, o.name)
		}
	}
	for _, name := range removed {
		if err := d.fs.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("raftstore: remove old snapshot file: %w", err)
		}
	}
	return removed, nil
}
