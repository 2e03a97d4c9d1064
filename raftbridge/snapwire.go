package raftbridge

import (
	"encoding/binary"
	"fmt"

	"github.com/raftbus/raftbus/internal/wire"
)

// Snapshot transfer wire types; doc.go describes the protocol.

// snapChunk is one chunk of a snapshot transfer (EnvelopeSnapChunk).
type snapChunk struct {
	wire.Header
	// Transfer identifies the transfer among all of the sender's; a new
	// attempt, even of the same snapshot, gets a new one.
	Transfer uint64
	// Term and Index are the snapshot's, repeated in every chunk so that a
	// chunk can never be attached to another snapshot's bytes.
	Term, Index uint64
	// Chunk is this chunk's number, Chunks the total (at least 1).
	Chunk, Chunks uint32
	// Size is the length of the whole snapshot data and CRC its CRC32C
	// (Castagnoli); both are in every chunk.
	Size uint64
	CRC  uint32
	// Meta is the MsgSnap marshalled without its snapshot data; chunk 0
	// carries it, every other chunk has none.
	Meta []byte
	// Data is this chunk's slice of the snapshot data. After decoding it
	// aliases the envelope bytes.
	Data []byte
}

// chunkFixedSize is the fixed part of a chunk body.
const chunkFixedSize = 8 + 8 + 8 + 4 + 4 + 8 + 4

// chunkOverhead bounds everything in a chunk envelope except Meta and Data.
const chunkOverhead = wire.MaxHeaderSize + chunkFixedSize + 2*binary.MaxVarintLen64

func appendSnapChunk(dst []byte, c *snapChunk) []byte {
	return append(appendSnapChunkHead(dst, c, len(c.Data)), c.Data...)
}

// appendSnapChunkHead appends all of a chunk envelope but its data, which
// is dataLen bytes long and follows, for a caller reading the data in
// place (c.Data is ignored).
func appendSnapChunkHead(dst []byte, c *snapChunk, dataLen int) []byte {
	h := c.Header
	h.Kind = wire.EnvelopeSnapChunk
	dst = wire.AppendHeader(dst, &h)
	dst = binary.BigEndian.AppendUint64(dst, c.Transfer)
	dst = binary.BigEndian.AppendUint64(dst, c.Term)
	dst = binary.BigEndian.AppendUint64(dst, c.Index)
	dst = binary.BigEndian.AppendUint32(dst, c.Chunk)
	dst = binary.BigEndian.AppendUint32(dst, c.Chunks)
	dst = binary.BigEndian.AppendUint64(dst, c.Size)
	dst = binary.BigEndian.AppendUint32(dst, c.CRC)
	dst = binary.AppendUvarint(dst, uint64(len(c.Meta)))
	dst = append(dst, c.Meta...)
	return binary.AppendUvarint(dst, uint64(dataLen))
}

func decodeSnapChunk(h wire.Header, body []byte) (*snapChunk, error) {
	if h.Kind != wire.EnvelopeSnapChunk {
		return nil, fmt.Errorf("%w: envelope kind %s where a snapshot chunk was expected", wire.ErrMalformed, h.Kind)
	}
	if len(body) < chunkFixedSize {
		return nil, fmt.Errorf("%w: snapshot chunk body of %d bytes is shorter than %d", wire.ErrMalformed, len(body), chunkFixedSize)
	}
	c := &snapChunk{Header: h}
	c.Transfer = binary.BigEndian.Uint64(body[0:8])
	c.Term = binary.BigEndian.Uint64(body[8:16])
	c.Index = binary.BigEndian.Uint64(body[16:24])
	c.Chunk = binary.BigEndian.Uint32(body[24:28])
	c.Chunks = binary.BigEndian.Uint32(body[28:32])
	c.Size = binary.BigEndian.Uint64(body[32:40])
	c.CRC = binary.BigEndian.Uint32(body[40:44])
	rest := body[chunkFixedSize:]
	var err error
	if c.Meta, rest, err = lengthPrefixed(rest, "metadata"); err != nil {
		return nil, err
	}
	if c.Data, rest, err = lengthPrefixed(rest, "data"); err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after a snapshot chunk", wire.ErrMalformed, len(rest))
	}
	switch {
	case c.Chunks == 0 || c.Chunk >= c.Chunks:
		return nil, fmt.Errorf("%w: chunk %d of %d", wire.ErrMalformed, c.Chunk, c.Chunks)
	case uint64(c.Chunks) > max(c.Size, 1):
		// Every chunk but a lone empty one carries at least one byte.
		return nil, fmt.Errorf("%w: %d chunks for %d bytes", wire.ErrMalformed, c.Chunks, c.Size)
	case uint64(len(c.Data)) > c.Size:
		return nil, fmt.Errorf("%w: chunk of %d bytes in a snapshot of %d", wire.ErrMalformed, len(c.Data), c.Size)
	case (c.Chunk == 0) != (len(c.Meta) > 0):
		return nil, fmt.Errorf("%w: chunk %d with %d bytes of metadata (only chunk 0 has it)", wire.ErrMalformed, c.Chunk, len(c.Meta))
	}
	return c, nil
}

func lengthPrefixed(b []byte, what string) (field, rest []byte, err error) {
	n, k := wire.ReadUvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("%w: snapshot chunk %s is truncated", wire.ErrMalformed, what)
	}
	end := k + int(n)
	return b[k:end:end], b[end:], nil
}

// ackStatus is what a snapshot acknowledgement reports.
type ackStatus uint8

const (
	// ackProgress: chunks [0, Next) arrived in order; keep sending.
	ackProgress ackStatus = iota
	// ackGap: a chunk other than Next arrived and was discarded; resend
	// from Next.
	ackGap
	// ackApplying: every chunk arrived and the node is persisting and
	// applying the snapshot; wait.
	ackApplying
	// ackDone: the node accepted the snapshot. Only now may the sender
	// report SnapshotFinish.
	ackDone
	// ackFailed: the receiver gave up on the transfer (refused, checksum,
	// validation or apply failure).
	ackFailed
)

func (s ackStatus) String() string {
	switch s {
	case ackProgress:
		return "progress"
	case ackGap:
		return "gap"
	case ackApplying:
		return "applying"
	case ackDone:
		return "done"
	case ackFailed:
		return "failed"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// snapAck acknowledges a snapshot transfer (EnvelopeSnapAck). It travels
// from the snapshot's receiver back to its sender.
type snapAck struct {
	wire.Header
	Transfer uint64
	Index    uint64
	Status   ackStatus
	// Next is the number of chunks received in order.
	Next uint32
}

const ackBodySize = 8 + 8 + 1 + 4

func appendSnapAck(dst []byte, a *snapAck) []byte {
	h := a.Header
	h.Kind = wire.EnvelopeSnapAck
	dst = wire.AppendHeader(dst, &h)
	dst = binary.BigEndian.AppendUint64(dst, a.Transfer)
	dst = binary.BigEndian.AppendUint64(dst, a.Index)
	dst = append(dst, byte(a.Status))
	return binary.BigEndian.AppendUint32(dst, a.Next)
}

func decodeSnapAck(h wire.Header, body []byte) (*snapAck, error) {
	if h.Kind != wire.EnvelopeSnapAck {
		return nil, fmt.Errorf("%w: envelope kind %s where a snapshot ack was expected", wire.ErrMalformed, h.Kind)
	}
	if len(body) != ackBodySize {
		return nil, fmt.Errorf("%w: snapshot ack body of %d bytes, want %d", wire.ErrMalformed, len(body), ackBodySize)
	}
	a := &snapAck{Header: h}
	a.Transfer = binary.BigEndian.Uint64(body[0:8])
	a.Index = binary.BigEndian.Uint64(body[8:16])
	a.Status = ackStatus(body[16])
	a.Next = binary.BigEndian.Uint32(body[17:21])
	if a.Status > ackFailed {
		return nil, fmt.Errorf("%w: unknown snapshot ack status %d", wire.ErrMalformed, body[16])
	}
	return a, nil
}
