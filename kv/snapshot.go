package kv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/google/btree"
)

// A snapshot is the whole state in one sequential, self-checking stream, so
// it can be written and read in one pass without knowing its size first:
//
//	snapshot = header record{count} crc
//	header   = magic("RBKV") version(1) applied(8) count(8)
//	record   = keylen(uvarint) key{keylen} vallen(uvarint) value{vallen}
//	           create(uvarint) mod(uvarint)
//	crc      = CRC-32C (Castagnoli) of every byte before it (4)
//
// Fixed-width integers are big-endian. Records are in strictly ascending key
// order, keys are non-empty and 1 <= create <= mod <= applied. Anything else,
// including bytes after the crc, is a malformed snapshot.
const (
	snapshotMagic   = "RBKV"
	snapshotVersion = 1
	// snapshotHeaderSize is magic + version + applied + count.
	snapshotHeaderSize  = 4 + 1 + 8 + 8
	snapshotTrailerSize = 4
	// snapshotChunk is how much WriteSnapshot buffers per Write and how
	// much RestoreFrom reads ahead.
	snapshotChunk = 64 << 10
	// snapshotMaxAlloc bounds each step by which RestoreFrom grows a buffer
	// for a field whose length it has not yet seen data for.
	snapshotMaxAlloc = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTruncated is wrapped into ErrBadSnapshot errors.
var errTruncated = errors.New("truncated")

// Snapshot returns the serialised state as of the applied index. It works
// on a copy-on-write clone, so it may be called from any goroutine and does
// not block Apply or readers. The buffer is allocated once, at its exact size.
func (s *Store) Snapshot() ([]byte, error) {
	tree, applied, encoded := s.clone()
	buf := make([]byte, 0, int64(snapshotHeaderSize)+encoded+snapshotTrailerSize)
	buf = appendSnapshotHeader(buf, applied, uint64(tree.Len()))
	tree.Ascend(func(e entry) bool {
		buf = appendRecord(buf, e)
		return true
	})
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli)), nil
}

// WriteSnapshot streams the same bytes Snapshot returns to w, in chunks of
// about 64 KiB, without holding the whole snapshot in memory. Like Snapshot
// it works on a clone and may run concurrently with Apply.
func (s *Store) WriteSnapshot(w io.Writer) error {
	tree, applied, _ := s.clone()
	buf := make([]byte, 0, 2*snapshotChunk)
	buf = appendSnapshotHeader(buf, applied, uint64(tree.Len()))
	var crc uint32
	var err error
	flush := func() {
		crc = crc32.Update(crc, castagnoli, buf)
		_, err = w.Write(buf)
		buf = buf[:0]
	}
	tree.Ascend(func(e entry) bool {
		buf = appendRecord(buf, e)
		if len(buf) >= snapshotChunk {
			flush()
		}
		return err == nil
	})
	if err == nil {
		flush()
	}
	if err == nil {
		_, err = w.Write(binary.BigEndian.AppendUint32(nil, crc))
	}
	if err != nil {
		return fmt.Errorf("kv: writing snapshot: %w", err)
	}
	return nil
}

// Restore replaces the whole state, applied index included, with a snapshot
// produced by Snapshot or WriteSnapshot. The snapshot is verified completely
// (checksum, order, indexes) before anything is replaced: on error the state
// is unchanged. data is not retained.
func (s *Store) Restore(data []byte) error {
	if len(data) < snapshotHeaderSize+snapshotTrailerSize {
		return fmt.Errorf("%w: %d bytes, shorter than header and checksum", ErrBadSnapshot, len(data))
	}
	body := data[:len(data)-snapshotTrailerSize]
	want := binary.BigEndian.Uint32(data[len(data)-snapshotTrailerSize:])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", ErrBadSnapshot, got, want)
	}
	src := &sliceSource{b: body}
	tree, applied, encoded, err := decodeSnapshot(src)
	if err != nil {
		return err
	}
	if len(src.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last record", ErrBadSnapshot, len(src.b))
	}
	s.install(tree, applied, encoded)
	return nil
}

// RestoreFrom is Restore reading the snapshot from r until EOF. It keeps
// only the decoded state and a 64 KiB read buffer in memory. Errors of r
// other than a premature EOF are returned wrapped, not as ErrBadSnapshot.
func (s *Store) RestoreFrom(r io.Reader) error {
	src := &streamSource{r: bufio.NewReaderSize(r, snapshotChunk)}
	tree, applied, encoded, err := decodeSnapshot(src)
	if err != nil {
		return err
	}
	want := src.crc
	trailer, err := src.next(snapshotTrailerSize)
	if err != nil {
		return snapshotReadError("checksum", err)
	}
	if got := binary.BigEndian.Uint32(trailer); got != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", ErrBadSnapshot, want, got)
	}
	switch _, err := src.r.Peek(1); {
	case err == nil:
		return fmt.Errorf("%w: data after the checksum", ErrBadSnapshot)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("kv: reading snapshot: %w", err)
	}
	s.install(tree, applied, encoded)
	return nil
}

func (s *Store) install(tree *btree.BTreeG[entry], applied uint64, encoded int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tree, s.applied, s.encoded = tree, applied, encoded
}

func appendSnapshotHeader(b []byte, applied, count uint64) []byte {
	b = append(b, snapshotMagic...)
	b = append(b, snapshotVersion)
	b = binary.BigEndian.AppendUint64(b, applied)
	return binary.BigEndian.AppendUint64(b, count)
}

func appendRecord(b []byte, e entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(e.key)))
	b = append(b, e.key...)
	b = binary.AppendUvarint(b, uint64(len(e.value)))
	b = append(b, e.value...)
	b = binary.AppendUvarint(b, e.createIndex)
	return binary.AppendUvarint(b, e.modIndex)
}

// recordSize is len(appendRecord(nil, e)).
func recordSize(e entry) int {
	return uvarintLen(uint64(len(e.key))) + len(e.key) +
		uvarintLen(uint64(len(e.value))) + len(e.value) +
		uvarintLen(e.createIndex) + uvarintLen(e.modIndex)
}

// snapshotSource is where decodeSnapshot reads from: a byte slice whose
// checksum was verified up front, or a stream checksummed as it is read.
type snapshotSource interface {
	uvarint() (uint64, error)
	// next returns the next n bytes; they stay valid until the next call.
	next(n uint64) ([]byte, error)
}

// decodeSnapshot reads header and records into a new tree, validating as it
// goes. The caller checks the checksum and what follows the last record.
func decodeSnapshot(src snapshotSource) (*btree.BTreeG[entry], uint64, int64, error) {
	hdr, err := src.next(snapshotHeaderSize)
	if err != nil {
		return nil, 0, 0, snapshotReadError("header", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return nil, 0, 0, fmt.Errorf("%w: bad magic %q", ErrBadSnapshot, hdr[:len(snapshotMagic)])
	}
	if v := hdr[len(snapshotMagic)]; v != snapshotVersion {
		return nil, 0, 0, fmt.Errorf("%w: unsupported version %d", ErrBadSnapshot, v)
	}
	applied := binary.BigEndian.Uint64(hdr[len(snapshotMagic)+1:])
	count := binary.BigEndian.Uint64(hdr[len(snapshotMagic)+9:])

	tree := newTree()
	var encoded int64
	var prev string
	for i := uint64(0); i < count; i++ {
		e, err := decodeRecord(src)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("record %d: %w", i, err)
		}
		if i > 0 && e.key <= prev {
			return nil, 0, 0, fmt.Errorf("%w: record %d: key %q not after %q", ErrBadSnapshot, i, e.key, prev)
		}
		if e.createIndex == 0 || e.createIndex > e.modIndex || e.modIndex > applied {
			return nil, 0, 0, fmt.Errorf("%w: record %d: create index %d, mod index %d, applied index %d",
				ErrBadSnapshot, i, e.createIndex, e.modIndex, applied)
		}
		tree.ReplaceOrInsert(e)
		encoded += int64(recordSize(e))
		prev = e.key
	}
	return tree, applied, encoded, nil
}

func decodeRecord(src snapshotSource) (entry, error) {
	var e entry
	klen, err := src.uvarint()
	if err != nil {
		return e, snapshotReadError("key length", err)
	}
	if klen == 0 {
		return e, fmt.Errorf("%w: empty key", ErrBadSnapshot)
	}
	key, err := src.next(klen)
	if err != nil {
		return e, snapshotReadError("key", err)
	}
	e.key = string(key)
	vlen, err := src.uvarint()
	if err != nil {
		return e, snapshotReadError("value length", err)
	}
	value, err := src.next(vlen)
	if err != nil {
		return e, snapshotReadError("value", err)
	}
	// The source's bytes are not ours to keep.
	e.value = append(make([]byte, 0, len(value)), value...)
	if e.createIndex, err = src.uvarint(); err != nil {
		return e, snapshotReadError("create index", err)
	}
	if e.modIndex, err = src.uvarint(); err != nil {
		return e, snapshotReadError("mod index", err)
	}
	return e, nil
}

// snapshotReadError classifies a source error: malformed or truncated data
// is ErrBadSnapshot, anything else is the reader's own failure.
func snapshotReadError(field string, err error) error {
	if errors.Is(err, errTruncated) || errors.Is(err, errBadVarint) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: %w", ErrBadSnapshot, field, err)
	}
	return fmt.Errorf("kv: reading snapshot %s: %w", field, err)
}

type sliceSource struct{ b []byte }

func (s *sliceSource) uvarint() (uint64, error) {
	x, k := binary.Uvarint(s.b)
	if k <= 0 {
		return 0, errBadVarint
	}
	s.b = s.b[k:]
	return x, nil
}

func (s *sliceSource) next(n uint64) ([]byte, error) {
	if n > uint64(len(s.b)) {
		return nil, fmt.Errorf("%w: need %d bytes, %d left", errTruncated, n, len(s.b))
	}
	b := s.b[:n:n]
	s.b = s.b[n:]
	return b, nil
}

// streamSource reads through a bufio.Reader, peeking and discarding so that
// small fields need no copy, and folds every byte it hands out into crc.
type streamSource struct {
	r   *bufio.Reader
	crc uint32
	big []byte // reused for fields larger than the read buffer
}

func (s *streamSource) uvarint() (uint64, error) {
	b, err := s.r.Peek(binary.MaxVarintLen64)
	if len(b) == 0 {
		return 0, eofAsTruncated(err)
	}
	x, k := binary.Uvarint(b)
	if k <= 0 {
		if k == 0 && err != nil { // ran out of data inside the varint
			return 0, eofAsTruncated(err)
		}
		return 0, errBadVarint
	}
	s.crc = crc32.Update(s.crc, castagnoli, b[:k])
	_, _ = s.r.Discard(k) // k bytes are buffered: cannot fail
	return x, nil
}

func (s *streamSource) next(n uint64) ([]byte, error) {
	if n <= uint64(s.r.Size()) {
		b, err := s.r.Peek(int(n))
		if err != nil {
			return nil, eofAsTruncated(err)
		}
		s.crc = crc32.Update(s.crc, castagnoli, b)
		// Discarding buffered bytes does not refill, so b stays valid
		// until the next Peek.
		_, _ = s.r.Discard(int(n))
		return b, nil
	}
	// Grow as data actually arrives rather than trusting n: each step at
	// most doubles what was read, so a corrupt length costs at most twice
	// the bytes the stream really holds.
	s.big = s.big[:0]
	for uint64(len(s.big)) < n {
		chunk := min(n-uint64(len(s.big)), uint64(max(len(s.big), snapshotChunk)), snapshotMaxAlloc)
		start := len(s.big)
		s.big = append(s.big, make([]byte, chunk)...)
		if _, err := io.ReadFull(s.r, s.big[start:]); err != nil {
			return nil, eofAsTruncated(err)
		}
	}
	s.crc = crc32.Update(s.crc, castagnoli, s.big)
	return s.big, nil
}

func eofAsTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return err
}
