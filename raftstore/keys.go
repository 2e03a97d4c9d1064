package raftstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// formatVersion is the on-disk layout written by this code. Open refuses any
// other value. Bump it (and teach Open to migrate) whenever a key or value
// encoding below changes.
const formatVersion uint32 = 1

// Key layout. Everything lives in one Pebble keyspace:
//
//	"m/version"   -> uint32 big-endian formatVersion
//	"m/hardstate" -> proto-encoded raftpb.HardState (absent until first saved)
//	"m/truncated" -> truncatedState: index and term of the entry just
//	                 before the first one in the log (MemoryStorage's dummy
//	                 entry). Always present.
//	"m/snapshot"  -> snapRecord of the latest snapshot (absent if none)
//	"l" + 8-byte big-endian index -> proto-encoded raftpb.Entry
//
// Fixed-width big-endian indexes make the byte order of log keys the numeric
// order of indexes, so a range scan reads the log in order.
var (
	keyVersion   = []byte("m/version")
	keyHardState = []byte("m/hardstate")
	keyTruncated = []byte("m/truncated")
	keySnapshot  = []byte("m/snapshot")
)

const logPrefix = 'l'

// logKeyLen is the length of every log key.
const logKeyLen = 1 + 8

// logKey returns the key of the entry at index.
func logKey(index uint64) []byte {
	return appendLogKey(make([]byte, 0, logKeyLen), index)
}

// appendLogKey appends the key of the entry at index to b.
func appendLogKey(b []byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, logPrefix), index)
}

// logKeyEnd is the exclusive upper bound of every log key.
var logKeyEnd = []byte{logPrefix + 1}

// parseLogKey returns the index of a log key.
func parseLogKey(k []byte) (uint64, error) {
	if len(k) != logKeyLen || k[0] != logPrefix {
		return 0, fmt.Errorf("%w: malformed log key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// logKeyAfter returns the key of the entry after index, or logKeyEnd when
// index is the largest possible.
func logKeyAfter(index uint64) []byte {
	if index == math.MaxUint64 {
		return logKeyEnd
	}
	return logKey(index + 1)
}

func encodeVersion(v uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, v)
}

func decodeVersion(b []byte) (uint32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("%w: format version record has %d bytes", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// truncatedState is the index and term of the last entry removed from the
// log (by Compact or ApplySnapshot). FirstIndex is index+1, and Term(index)
// is answered from here.
type truncatedState struct {
	index, term uint64
}

func (t truncatedState) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, t.index)
	return binary.BigEndian.AppendUint64(b, t.term)
}

func decodeTruncated(b []byte) (truncatedState, error) {
	if len(b) != 16 {
		return truncatedState{}, fmt.Errorf("%w: truncated-state record has %d bytes", ErrCorrupt, len(b))
	}
	return truncatedState{index: binary.BigEndian.Uint64(b), term: binary.BigEndian.Uint64(b[8:])}, nil
}

// castagnoli is the CRC32C table used for every checksum in the store.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapRecord is the Pebble-side description of a snapshot; the data lives in
// a file of the snap directory.
type snapRecord struct {
	index, term uint64
	confState   []byte // proto-encoded raftpb.ConfState
	file        string // base name in the snap directory; "" when there is no data
	size        uint64 // bytes of data
	crc         uint32 // CRC32C of the data
}

const snapRecordVersion = 1

// encode lays a record out as: version u8, index u64, term u64, size u64,
// crc u32, file name (u16 length + bytes), conf state (u32 length + bytes),
// then a CRC32C of everything before it.
func (r *snapRecord) encode() []byte {
	b := []byte{snapRecordVersion}
	b = binary.BigEndian.AppendUint64(b, r.index)
	b = binary.BigEndian.AppendUint64(b, r.term)
	b = binary.BigEndian.AppendUint64(b, r.size)
	b = binary.BigEndian.AppendUint32(b, r.crc)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.file)))
	b = append(b, r.file...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.confState)))
	b = append(b, r.confState...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeSnapRecord(b []byte) (*snapRecord, error) {
	bad := func(why string) (*snapRecord, error) {
		return nil, fmt.Errorf("%w: snapshot record: %s", ErrCorrupt, why)
	}
	const fixed = 1 + 8 + 8 + 8 + 4 + 2
	if len(b) < fixed+4+4 {
		return bad("too short")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return bad("checksum mismatch")
	}
	if body[0] != snapRecordVersion {
		return bad(fmt.Sprintf("unknown record version %d", body[0]))
	}
	r := &snapRecord{
		index: binary.BigEndian.Uint64(body[1:]),
		term:  binary.BigEndian.Uint64(body[9:]),
		size:  binary.BigEndian.Uint64(body[17:]),
		crc:   binary.BigEndian.Uint32(body[25:]),
	}
	rest := body[29:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < n+4 {
		return bad("file name overruns the record")
	}
	r.file, rest = string(rest[:n]), rest[n:]
	m := int(binary.BigEndian.Uint32(rest))
	rest = rest[4:]
	if len(rest) != m {
		return bad("conf state length disagrees with the record")
	}
	r.confState = append([]byte(nil), rest...)
	return r, nil
}

// entryTerm reads only the term (field 2) of a proto-encoded raftpb.Entry,
// so that Term does not copy an entry's payload.
func entryTerm(b []byte) (uint64, error) {
	var term uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, fmt.Errorf("%w: entry: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, fmt.Errorf("%w: entry term: %v", ErrCorrupt, protowire.ParseError(n))
			}
			term, b = v, b[n:] // the last occurrence wins, as in proto.Unmarshal
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, fmt.Errorf("%w: entry: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return term, nil
}
