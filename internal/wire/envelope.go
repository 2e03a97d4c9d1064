package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Envelope versions this build speaks. A received envelope whose version is
// outside [MinVersion, MaxVersion] is dropped with reason "version". The
// encoder writes version 1 for group 0 (byte for byte what single-group
// builds write, so they keep interoperating) and version 2, which adds the
// Raft group, for every other group.
const (
	MinVersion = 1
	MaxVersion = 2
)

// Wire limits and sizes; doc.go gives the full format.
const (
	// HeaderSize is the size of the fixed envelope header of version 1.
	HeaderSize = 76
	// HeaderSizeV2 is the size of the header of version 2: version 1's
	// followed by the 8-byte group.
	HeaderSizeV2 = HeaderSize + 8
	// MaxHeaderSize is the largest header of any version.
	MaxHeaderSize = HeaderSizeV2
	// MaxMessagesPerEnvelope caps the Raft messages in one envelope. The
	// decoder rejects a larger count before allocating anything, and the
	// bridge splits larger batches.
	MaxMessagesPerEnvelope = 4096

	magic0 = 'R'
	magic1 = 'B'
	// versionPrefix is the part of the header every version keeps: magic
	// and version. Everything after it may change with the version.
	versionPrefix = 3
)

// Errors returned (wrapped) by the decoders and the encoder.
var (
	// ErrMalformed is wrapped by every decoding error other than an
	// unsupported version: truncation, bad magic, lengths or counts that do
	// not fit, trailing bytes, protobuf errors.
	ErrMalformed = errors.New("wire: malformed envelope")
	// ErrVersion is wrapped when the envelope's version is outside
	// [MinVersion, MaxVersion].
	ErrVersion = errors.New("wire: unsupported envelope version")
)

// EnvelopeKind says what the body of an envelope holds.
type EnvelopeKind uint8

// Envelope kinds. Messages travel on bus.KindMsg subjects, snapshot chunks
// and acknowledgements on bus.KindSnap subjects.
const (
	// EnvelopeMessages holds a batch of Raft messages.
	EnvelopeMessages EnvelopeKind = 1
	// EnvelopeSnapChunk holds one chunk of a snapshot transfer.
	EnvelopeSnapChunk EnvelopeKind = 2
	// EnvelopeSnapAck acknowledges snapshot chunks.
	EnvelopeSnapAck EnvelopeKind = 3
	// EnvelopeBatch (version 2 only, on bus.KindMsg subjects) holds
	// several complete message envelopes, of any groups, for one
	// destination: a host coalesces heartbeats into it (batch.go). It has
	// no header of its own beyond magic, version and kind.
	EnvelopeBatch EnvelopeKind = 4
	// EnvelopeHostPing (version 2 only, on bus.KindMsg subjects) tells a
	// peer host that this host is alive while all the groups they share
	// are quiescent; it carries only the cluster.
	EnvelopeHostPing EnvelopeKind = 5
)

func (k EnvelopeKind) String() string {
	switch k {
	case EnvelopeMessages:
		return "messages"
	case EnvelopeSnapChunk:
		return "snap-chunk"
	case EnvelopeSnapAck:
		return "snap-ack"
	case EnvelopeBatch:
		return "batch"
	case EnvelopeHostPing:
		return "host-ping"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Endpoint is one end of an envelope: a Raft ID and the incarnation holding
// it.
type Endpoint struct {
	ID          uint64
	Incarnation uuid.UUID
}

// Header is the fixed part of every envelope.
type Header struct {
	// Version is the envelope version read by the decoder; the encoder
	// ignores it and writes MaxVersion.
	Version uint8
	Kind    EnvelopeKind
	Cluster uuid.UUID
	From    Endpoint
	To      Endpoint
	// DirectoryVersion is the sender's Directory.Version() when it sent the
	// envelope. It is informational: a receiver learns that a peer has seen
	// newer membership, it never changes membership because of it.
	DirectoryVersion uint64
	// Group is the Raft group the envelope belongs to; 0 is the default
	// group, the only one of version 1.
	Group uint64
}

// HeaderLen is the size of the header the encoder writes for group.
func HeaderLen(group uint64) int {
	if group == 0 {
		return HeaderSize
	}
	return HeaderSizeV2
}

// versionFor is the version the encoder writes for group.
func versionFor(group uint64) uint8 {
	if group == 0 {
		return 1
	}
	return 2
}

// Envelope is a decoded envelope of kind EnvelopeMessages.
type Envelope struct {
	Header
	Messages []*raftpb.Message
}

// marshalOpts reuses the sizes cached by the proto.Size call that always
// precedes marshalling, so every message is measured once.
var marshalOpts = proto.MarshalOptions{UseCachedSize: true}

// UnmarshalOpts decodes Raft messages: unknown fields are of no use to this
// raft version, and a Raft message is never nested deeply on the wire.
var UnmarshalOpts = proto.UnmarshalOptions{DiscardUnknown: true, RecursionLimit: 32}

// AppendHeader appends the fixed header to dst, of version 1 for group 0
// and version 2 otherwise; h.Version is ignored. The snapshot chunk and ack
// bodies follow it.
func AppendHeader(dst []byte, h *Header) []byte {
	v := versionFor(h.Group)
	dst = append(dst, magic0, magic1, v, byte(h.Kind))
	dst = append(dst, h.Cluster[:]...)
	dst = binary.BigEndian.AppendUint64(dst, h.From.ID)
	dst = append(dst, h.From.Incarnation[:]...)
	dst = binary.BigEndian.AppendUint64(dst, h.To.ID)
	dst = append(dst, h.To.Incarnation[:]...)
	dst = binary.BigEndian.AppendUint64(dst, h.DirectoryVersion)
	if v == 2 {
		dst = binary.BigEndian.AppendUint64(dst, h.Group)
	}
	return dst
}

// EnvelopeSize returns the encoded size of an envelope holding msgs. As a
// side effect it caches each message's protobuf size, which AppendEnvelope
// then reuses; the messages must not change in between.
func EnvelopeSize(group uint64, msgs []*raftpb.Message) int {
	n := HeaderLen(group) + UvarintLen(uint64(len(msgs)))
	for _, m := range msgs {
		n += FramedSize(proto.Size(m))
	}
	return n
}

// FramedSize is the size of a message of n bytes with its length prefix.
func FramedSize(n int) int { return UvarintLen(uint64(n)) + n }

// AppendEnvelope appends an envelope of kind EnvelopeMessages holding msgs
// to dst and returns the extended slice. h.Kind and h.Version are ignored.
// Each message is marshalled straight into dst (no intermediate slices), so
// with a dst of sufficient capacity encoding does not allocate.
func AppendEnvelope(dst []byte, h *Header, msgs []*raftpb.Message) ([]byte, error) {
	return AppendEnvelopeSized(dst, h, msgs, nil)
}

// AppendEnvelopeSized is AppendEnvelope for a caller that already measured
// the messages: sizes[i] is proto.Size(msgs[i]), computed after the last
// change to the message. With sizes nil each message is measured here.
func AppendEnvelopeSized(dst []byte, h *Header, msgs []*raftpb.Message, sizes []int) ([]byte, error) {
	if len(msgs) == 0 || len(msgs) > MaxMessagesPerEnvelope {
		return dst, fmt.Errorf("wire: an envelope holds 1 to %d messages, not %d", MaxMessagesPerEnvelope, len(msgs))
	}
	hdr := *h
	hdr.Kind = EnvelopeMessages
	dst = AppendHeader(dst, &hdr)
	dst = binary.AppendUvarint(dst, uint64(len(msgs)))
	for i, m := range msgs {
		if m == nil {
			return dst, fmt.Errorf("wire: message %d of the batch is nil", i)
		}
		var size int
		if sizes != nil {
			size = sizes[i]
		} else {
			size = proto.Size(m)
		}
		dst = binary.AppendUvarint(dst, uint64(size))
		start := len(dst)
		var err error
		if dst, err = marshalOpts.MarshalAppend(dst, m); err != nil {
			return dst, fmt.Errorf("wire: marshal %s to %x: %w", m.GetType(), m.GetTo(), err)
		}
		if len(dst)-start != size {
			// Only possible if the message changed after it was measured,
			// which the raft loop contract forbids; refuse rather than send
			// a frame whose length prefix lies.
			return dst, fmt.Errorf("wire: %s to %x changed while it was marshalled", m.GetType(), m.GetTo())
		}
	}
	return dst, nil
}

// DecodeHeader parses the fixed header and returns it with the body that
// follows. The version is checked right after the magic, before anything
// else is parsed, because the rest of the header belongs to the version.
func DecodeHeader(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < versionPrefix {
		return h, nil, fmt.Errorf("%w: %d bytes is shorter than the version prefix", ErrMalformed, len(b))
	}
	if b[0] != magic0 || b[1] != magic1 {
		return h, nil, fmt.Errorf("%w: bad magic 0x%02x%02x", ErrMalformed, b[0], b[1])
	}
	h.Version = b[2]
	if h.Version < MinVersion || h.Version > MaxVersion {
		return h, nil, fmt.Errorf("%w: version %d, this build speaks %d to %d", ErrVersion, h.Version, MinVersion, MaxVersion)
	}
	size := HeaderSize
	if h.Version == 2 {
		size = HeaderSizeV2
	}
	if len(b) < size {
		return h, nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrMalformed, len(b), size)
	}
	h.Kind = EnvelopeKind(b[3])
	if h.Kind < EnvelopeMessages || h.Kind > EnvelopeSnapAck {
		// Batches and host pings are a host's business (DecodeBatch,
		// DecodeHostPing), never a group's.
		return h, nil, fmt.Errorf("%w: envelope kind %d where a group's envelope was expected", ErrMalformed, b[3])
	}
	copy(h.Cluster[:], b[4:20])
	h.From.ID = binary.BigEndian.Uint64(b[20:28])
	copy(h.From.Incarnation[:], b[28:44])
	h.To.ID = binary.BigEndian.Uint64(b[44:52])
	copy(h.To.Incarnation[:], b[52:68])
	h.DirectoryVersion = binary.BigEndian.Uint64(b[68:76])
	if h.Version == 2 {
		h.Group = binary.BigEndian.Uint64(b[76:84])
		if h.Group == 0 {
			// Group 0 has exactly one encoding, version 1.
			return h, nil, fmt.Errorf("%w: version 2 envelope of group 0", ErrMalformed)
		}
	}
	return h, b[size:], nil
}

// DecodeEnvelope decodes an envelope of kind EnvelopeMessages. It never
// panics: every count and length is checked against the bytes that remain
// before anything is allocated for it. The returned messages do not alias b.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	h, body, err := DecodeHeader(b)
	if err != nil {
		return nil, err
	}
	if h.Kind != EnvelopeMessages {
		return nil, fmt.Errorf("%w: envelope kind %s where messages were expected", ErrMalformed, h.Kind)
	}
	msgs, err := DecodeMessages(body)
	if err != nil {
		return nil, err
	}
	return &Envelope{Header: h, Messages: msgs}, nil
}

// DecodeMessages decodes the body of a messages envelope (what follows the
// header), checking every count and length before it allocates.
func DecodeMessages(body []byte) ([]*raftpb.Message, error) {
	count, k := ReadUvarint(body)
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad message count", ErrMalformed)
	}
	rest := body[k:]
	// Every message takes at least its one-byte length, so a count above
	// the remaining bytes is a lie; checking it bounds the loops below.
	if count == 0 || count > MaxMessagesPerEnvelope || count > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: message count %d (limit %d) does not fit %d bytes", ErrMalformed, count, MaxMessagesPerEnvelope, len(rest))
	}
	// First pass: validate every length, so a truncated batch allocates
	// nothing (etcd#5386: never trust a length before checking it).
	scan := rest
	for i := uint64(0); i < count; i++ {
		n, k := ReadUvarint(scan)
		if k <= 0 || n > uint64(len(scan)-k) {
			return nil, fmt.Errorf("%w: message %d of %d is truncated", ErrMalformed, i+1, count)
		}
		scan = scan[k+int(n):]
	}
	if len(scan) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after %d messages", ErrMalformed, len(scan), count)
	}
	// Second pass: find the messages the fast path takes (fastdecode.go)
	// and size its arenas, so that they cost a few allocations per envelope
	// instead of several per field.
	var fast, entries, dataBytes int
	scan = rest
	for range count {
		n, k := ReadUvarint(scan)
		if e, d, ok := scanMessage(scan[k : k+int(n)]); ok {
			fast++
			entries += e
			dataBytes += d
		}
		scan = scan[k+int(n):]
	}
	msgs := make([]*raftpb.Message, count)
	var boxes []msgBox
	var a fastArena
	if fast > 0 {
		boxes = make([]msgBox, fast)
		if entries > 0 {
			a.ents = make([]entBox, entries)
			a.ptrs = make([]*raftpb.Entry, 0, entries)
		}
		a.data = make([]byte, dataBytes)
	}
	for i := range msgs {
		n, k := ReadUvarint(rest)
		b := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		if fast == int(count) || isFast(b) {
			x := &boxes[0]
			boxes = boxes[1:]
			a.fillMessage(b, x)
			msgs[i] = &x.m
			continue
		}
		m, err := decodeMessageProto(b)
		if err != nil {
			return nil, fmt.Errorf("%w: message %d of %d: %v", ErrMalformed, i+1, count, err)
		}
		msgs[i] = m
	}
	return msgs, nil
}

func isFast(b []byte) bool {
	_, _, ok := scanMessage(b)
	return ok
}

// decodeMessageProto is what DecodeMessages does for one message that
// the fast path does not take; the tests compare the two.
func decodeMessageProto(b []byte) (*raftpb.Message, error) {
	m := new(raftpb.Message)
	if err := UnmarshalOpts.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadUvarint is binary.Uvarint that also refuses non-minimal encodings,
// so that every value has exactly one encoding on the wire (k <= 0 on any
// error).
func ReadUvarint(b []byte) (uint64, int) {
	n, k := binary.Uvarint(b)
	if k > 0 && k != UvarintLen(n) {
		return 0, 0
	}
	return n, k
}

// UvarintLen is the length of x as a uvarint.
func UvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
