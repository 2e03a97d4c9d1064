package raftstore

import (
	"bytes"
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

// Key layout. Everything lives in one Pebble keyspace. Group 0 (the only
// group of a store opened with Open) uses the layout of the first version,
// unprefixed:
//
//	"m/version"   -> uint32 big-endian formatVersion
//	"m/hardstate" -> proto-encoded raftpb.HardState (absent until first saved)
//	"m/truncated" -> truncatedState: index and term of the entry just
//	                 before the first one in the log (MemoryStorage's dummy
//	                 entry). Always present.
//	"m/snapshot"  -> snapRecord of the latest snapshot (absent if none)
//	"l" + 8-byte big-endian index -> proto-encoded raftpb.Entry
//
// Group g > 0 of a Host has the same keys, each behind a 9-byte group
// prefix: 'g' + 8-byte big-endian g. So group 7's hard state is
// "g\x00\x00\x00\x00\x00\x00\x00\x07m/hardstate" and its entry 5 is
// "g" + be64(7) + "l" + be64(5). Every group has its own "m/version".
//
// Why this is safe for range operations: no group-0 key starts with 'g'
// (they start with 'm' or 'l'), so no group-0 range ('l'+be64(0) up to "m")
// contains a prefixed key, and the prefix has a fixed width, so a range of
// group g (prefix+"l"+... up to prefix+"m") lies strictly inside g's prefix
// and cannot reach g+1's keys; and 'g' < 'l', so group-0 ranges cannot reach
// down into prefixed keys either.
//
// Fixed-width big-endian indexes make the byte order of log keys the numeric
// order of indexes, so a range scan reads the log in order.
var (
	keyVersion   = []byte("m/version")
	keyHardState = []byte("m/hardstate")
	keyTruncated = []byte("m/truncated")
	keySnapshot  = []byte("m/snapshot")
)

// groupPrefixByte starts every key of a group g > 0. It must differ from
// the first byte of every group-0 key ('m', 'l').
const groupPrefixByte = 'g'

// groupPrefixLen is the length of the prefix of a group g > 0.
const groupPrefixLen = 1 + 8

// groupPrefix returns the key prefix of group g > 0.
func groupPrefix(g uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{groupPrefixByte}, g)
}

// keySpace is the set of keys of one group. The group-0 key space has no
// prefix, so its keys are the package-level ones above.
type keySpace struct {
	prefix                                  []byte // nil for group 0
	version, hardState, truncated, snapshot []byte
	logStart, logEnd                        []byte // bounds of every log key
}

func newKeySpace(g uint64) *keySpace {
	if g == 0 {
		return &keySpace{version: keyVersion, hardState: keyHardState, truncated: keyTruncated,
			snapshot: keySnapshot, logStart: logKey(0), logEnd: logKeyEnd}
	}
	p := groupPrefix(g)
	with := func(k []byte) []byte { return append(append(make([]byte, 0, len(p)+len(k)), p...), k...) }
	k := &keySpace{prefix: p, version: with(keyVersion), hardState: with(keyHardState),
		truncated: with(keyTruncated), snapshot: with(keySnapshot), logEnd: with(logKeyEnd)}
	k.logStart = k.logKey(0)
	return k
}

// logKey returns the group's key of the entry at index.
func (k *keySpace) logKey(index uint64) []byte {
	return k.appendLogKey(make([]byte, 0, len(k.prefix)+logKeyLen), index)
}

// appendLogKey appends the group's key of the entry at index to b.
func (k *keySpace) appendLogKey(b []byte, index uint64) []byte {
	return appendLogKey(append(b, k.prefix...), index)
}

// parseLogKey returns the index of one of the group's log keys.
func (k *keySpace) parseLogKey(key []byte) (uint64, error) {
	if len(key) < len(k.prefix) || !bytes.Equal(key[:len(k.prefix)], k.prefix) {
		return 0, fmt.Errorf("%w: log key %x outside its group", ErrCorrupt, key)
	}
	return parseLogKey(key[len(k.prefix):])
}

// logKeyAfter returns the group's key of the entry after index, or the
// group's log end when index is the largest possible.
func (k *keySpace) logKeyAfter(index uint64) []byte {
	if index == math.MaxUint64 {
		return k.logEnd
	}
	return k.logKey(index + 1)
}

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

// logKeyEnd is the exclusive upper bound of every log key of group 0.
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
