package wire

import (
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// The hand-written decoder for the hot Raft messages.
//
// raftpb v3.7 messages are proto2 with a pointer for every optional scalar,
// so proto.Unmarshal of a MsgApp with n entries allocates 5 + 5n times
// (the message, each entry, each scalar, each Data). DecodeMessages instead
// decodes the common shapes into a few arenas per envelope: one block of
// messages with their scalars, one block of entries with theirs, one slice
// of entry pointers and one buffer for all Data and Context bytes. The
// returned messages are ordinary raftpb.Messages; they do not alias the
// input, but the messages (and entries) of one envelope share those blocks,
// so the memory of an envelope is freed when none of its messages or
// entries is referenced any more.
//
// The fast path accepts only a strict subset of the protobuf encoding, the
// one proto.Marshal produces for these messages: one-byte tags of known
// fields with their declared wire type (any order, repeated scalars last
// wins as in protobuf), valid varints, enum values this raft version
// defines, entries with the known Entry fields, and Context bytes. Anything
// else (a snapshot, responses, unknown fields, a wire-type mismatch, an
// unknown enum value, any malformation) makes that one message fall back to
// proto.Unmarshal with UnmarshalOpts, so for every input the result, or
// the error, is what proto.Unmarshal gives; FuzzDecodeMessages checks it.

// Field tags (field number << 3 | wire type) the fast path knows: all of
// them fit one byte.
const (
	tagMsgType       = 1<<3 | byte(protowire.VarintType)
	tagMsgTo         = 2<<3 | byte(protowire.VarintType)
	tagMsgFrom       = 3<<3 | byte(protowire.VarintType)
	tagMsgTerm       = 4<<3 | byte(protowire.VarintType)
	tagMsgLogTerm    = 5<<3 | byte(protowire.VarintType)
	tagMsgIndex      = 6<<3 | byte(protowire.VarintType)
	tagMsgEntries    = 7<<3 | byte(protowire.BytesType)
	tagMsgCommit     = 8<<3 | byte(protowire.VarintType)
	tagMsgReject     = 10<<3 | byte(protowire.VarintType)
	tagMsgRejectHint = 11<<3 | byte(protowire.VarintType)
	tagMsgContext    = 12<<3 | byte(protowire.BytesType)
	tagMsgVote       = 13<<3 | byte(protowire.VarintType)

	tagEntType  = 1<<3 | byte(protowire.VarintType)
	tagEntTerm  = 2<<3 | byte(protowire.VarintType)
	tagEntIndex = 3<<3 | byte(protowire.VarintType)
	tagEntData  = 4<<3 | byte(protowire.BytesType)

	// maxMessageType and maxEntryType are the largest enum values raft
	// v3.7 defines; the enums are closed (proto2), so protobuf treats any
	// other value as an unknown field, which the fast path leaves to it.
	maxMessageType = uint64(raftpb.MsgForgetLeader)
	maxEntryType   = uint64(raftpb.EntryConfChangeV2)
)

// msgBox is a message with the storage for its scalars, allocated as one.
type msgBox struct {
	m          raftpb.Message
	typ        raftpb.MessageType
	reject     bool
	to         uint64
	from       uint64
	term       uint64
	logTerm    uint64
	index      uint64
	commit     uint64
	rejectHint uint64
	vote       uint64
}

// entBox is an entry with the storage for its scalars.
type entBox struct {
	e     raftpb.Entry
	typ   raftpb.EntryType
	term  uint64
	index uint64
}

// scanEntry checks that b is an Entry in the fast path's subset and
// returns the bytes its Data fields hold (an upper bound of what decoding
// keeps, since the last Data wins).
func scanEntry(b []byte) (dataBytes int, ok bool) {
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagEntType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 || v > maxEntryType {
				return 0, false
			}
			b = b[n:]
		case tagEntTerm, tagEntIndex:
			_, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false
			}
			b = b[n:]
		case tagEntData:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, false
			}
			dataBytes += len(v)
			b = b[n:]
		default:
			return 0, false
		}
	}
	return dataBytes, true
}

// scanMessage checks that b is a Message in the fast path's subset and
// returns how many entries it holds and how many Data and Context bytes.
func scanMessage(b []byte) (entries, dataBytes int, ok bool) {
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagMsgType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 || v > maxMessageType {
				return 0, 0, false
			}
			b = b[n:]
		case tagMsgTo, tagMsgFrom, tagMsgTerm, tagMsgLogTerm, tagMsgIndex,
			tagMsgCommit, tagMsgReject, tagMsgRejectHint, tagMsgVote:
			_, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, false
			}
			b = b[n:]
		case tagMsgEntries:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, 0, false
			}
			d, ok := scanEntry(v)
			if !ok {
				return 0, 0, false
			}
			entries++
			dataBytes += d
			b = b[n:]
		case tagMsgContext:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, 0, false
			}
			dataBytes += len(v)
			b = b[n:]
		default:
			return 0, 0, false
		}
	}
	return entries, dataBytes, true
}

// fastArena is the memory of one envelope's fast-path messages: ents and
// data are consumed from the front, ptrs is appended to within the
// capacity counted by the scan.
type fastArena struct {
	ents []entBox
	ptrs []*raftpb.Entry
	data []byte
}

// takeBytes copies v into the arena's data buffer and returns the copy,
// non-nil even when empty (protobuf's presence of a proto2 bytes field),
// with its capacity capped so that an append cannot reach its neighbour.
func (a *fastArena) takeBytes(v []byte) []byte {
	n := len(v)
	out := a.data[:n:n]
	copy(out, v)
	a.data = a.data[n:]
	return out
}

// fillEntry decodes an Entry that scanEntry accepted into e.
func (a *fastArena) fillEntry(b []byte, e *entBox) {
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagEntData:
			v, n := protowire.ConsumeBytes(b)
			e.e.Data = a.takeBytes(v)
			b = b[n:]
		default:
			v, n := protowire.ConsumeVarint(b)
			switch tag {
			case tagEntType:
				e.typ = raftpb.EntryType(v)
				e.e.Type = &e.typ
			case tagEntTerm:
				e.term = v
				e.e.Term = &e.term
			case tagEntIndex:
				e.index = v
				e.e.Index = &e.index
			}
			b = b[n:]
		}
	}
}

// fillMessage decodes a Message that scanMessage accepted into x.
func (a *fastArena) fillMessage(b []byte, x *msgBox) {
	m := &x.m
	first := len(a.ptrs)
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagMsgEntries:
			v, n := protowire.ConsumeBytes(b)
			e := &a.ents[0]
			a.ents = a.ents[1:]
			a.fillEntry(v, e)
			a.ptrs = append(a.ptrs, &e.e)
			b = b[n:]
		case tagMsgContext:
			v, n := protowire.ConsumeBytes(b)
			m.Context = a.takeBytes(v)
			b = b[n:]
		default:
			v, n := protowire.ConsumeVarint(b)
			switch tag {
			case tagMsgType:
				x.typ = raftpb.MessageType(v)
				m.Type = &x.typ
			case tagMsgTo:
				x.to = v
				m.To = &x.to
			case tagMsgFrom:
				x.from = v
				m.From = &x.from
			case tagMsgTerm:
				x.term = v
				m.Term = &x.term
			case tagMsgLogTerm:
				x.logTerm = v
				m.LogTerm = &x.logTerm
			case tagMsgIndex:
				x.index = v
				m.Index = &x.index
			case tagMsgCommit:
				x.commit = v
				m.Commit = &x.commit
			case tagMsgReject:
				x.reject = protowire.DecodeBool(v)
				m.Reject = &x.reject
			case tagMsgRejectHint:
				x.rejectHint = v
				m.RejectHint = &x.rejectHint
			case tagMsgVote:
				x.vote = v
				m.Vote = &x.vote
			}
			b = b[n:]
		}
	}
	if last := len(a.ptrs); last > first {
		m.Entries = a.ptrs[first:last:last]
	}
}
