package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

// A batch (version 2, kind EnvelopeBatch) carries complete envelopes of any
// groups for one destination host:
//
//	'R' 'B' 2 4 | uvarint count | count × (uvarint length, envelope)
//
// Each inner envelope keeps its own header and is validated by its group
// exactly as if it had arrived alone; the batch adds nothing a receiver
// trusts. Batches do not nest.
//
// A host ping (version 2, kind EnvelopeHostPing) is
//
//	'R' 'B' 2 5 | 16-byte cluster
//
// and says only that its sender (the subject's source) is alive.
const (
	batchPrefix = 4
	// HostPingSize is the size of a host ping.
	HostPingSize = batchPrefix + 16
	// MaxBatchEnvelopes caps the envelopes of one batch; the decoder
	// refuses a larger count before allocating anything.
	MaxBatchEnvelopes = 4096
)

// PayloadKind returns the kind of an envelope, batch or host ping without
// decoding it; ok is false when b does not start with a known magic,
// version and kind.
func PayloadKind(b []byte) (EnvelopeKind, bool) {
	if len(b) < batchPrefix || b[0] != magic0 || b[1] != magic1 || b[2] < MinVersion || b[2] > MaxVersion {
		return 0, false
	}
	k := EnvelopeKind(b[3])
	switch {
	case k >= EnvelopeMessages && k <= EnvelopeSnapAck:
		return k, true
	case (k == EnvelopeBatch || k == EnvelopeHostPing) && b[2] == 2:
		return k, true
	}
	return 0, false
}

// PeekGroup returns the group of a group envelope (not a batch or ping)
// from its header, without decoding the rest: 0 for version 1. The group's
// bridge decodes and checks the whole header again.
func PeekGroup(b []byte) (uint64, error) {
	k, ok := PayloadKind(b)
	if !ok || k > EnvelopeSnapAck {
		return 0, fmt.Errorf("%w: not a group envelope", ErrMalformed)
	}
	if b[2] == 1 {
		return 0, nil
	}
	if len(b) < HeaderSizeV2 {
		return 0, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrMalformed, len(b), HeaderSizeV2)
	}
	return binary.BigEndian.Uint64(b[HeaderSize:HeaderSizeV2]), nil
}

// BatchSize is the encoded size of a batch of envelopes.
func BatchSize(envs [][]byte) int {
	n := batchPrefix + UvarintLen(uint64(len(envs)))
	for _, e := range envs {
		n += FramedSize(len(e))
	}
	return n
}

// AppendBatch appends a batch holding envs to dst.
func AppendBatch(dst []byte, envs [][]byte) ([]byte, error) {
	if len(envs) == 0 || len(envs) > MaxBatchEnvelopes {
		return dst, fmt.Errorf("wire: a batch holds 1 to %d envelopes, not %d", MaxBatchEnvelopes, len(envs))
	}
	dst = append(dst, magic0, magic1, 2, byte(EnvelopeBatch))
	dst = binary.AppendUvarint(dst, uint64(len(envs)))
	for _, e := range envs {
		dst = binary.AppendUvarint(dst, uint64(len(e)))
		dst = append(dst, e...)
	}
	return dst, nil
}

// DecodeBatch splits a batch into its envelopes, which alias b. It checks
// every count and length before it allocates and never panics; an inner
// envelope that is itself a batch or a ping makes the whole batch
// malformed.
func DecodeBatch(b []byte) ([][]byte, error) {
	if k, ok := PayloadKind(b); !ok || k != EnvelopeBatch {
		return nil, fmt.Errorf("%w: not a batch", ErrMalformed)
	}
	rest := b[batchPrefix:]
	count, k := ReadUvarint(rest)
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad batch count", ErrMalformed)
	}
	rest = rest[k:]
	if count == 0 || count > MaxBatchEnvelopes || count > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: batch count %d (limit %d) does not fit %d bytes", ErrMalformed, count, MaxBatchEnvelopes, len(rest))
	}
	scan := rest
	for i := uint64(0); i < count; i++ {
		n, k := ReadUvarint(scan)
		if k <= 0 || n > uint64(len(scan)-k) {
			return nil, fmt.Errorf("%w: envelope %d of %d in the batch is truncated", ErrMalformed, i+1, count)
		}
		env := scan[k : k+int(n)]
		if kind, ok := PayloadKind(env); !ok || kind > EnvelopeSnapAck {
			return nil, fmt.Errorf("%w: envelope %d of %d in the batch is not a group envelope", ErrMalformed, i+1, count)
		}
		scan = scan[k+int(n):]
	}
	if len(scan) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after %d envelopes", ErrMalformed, len(scan), count)
	}
	out := make([][]byte, count)
	for i := range out {
		n, k := ReadUvarint(rest)
		out[i] = rest[k : k+int(n) : k+int(n)]
		rest = rest[k+int(n):]
	}
	return out, nil
}

// AppendHostPing appends a host ping for cluster to dst.
func AppendHostPing(dst []byte, cluster uuid.UUID) []byte {
	dst = append(dst, magic0, magic1, 2, byte(EnvelopeHostPing))
	return append(dst, cluster[:]...)
}

// DecodeHostPing returns the cluster of a host ping.
func DecodeHostPing(b []byte) (uuid.UUID, error) {
	var c uuid.UUID
	if k, ok := PayloadKind(b); !ok || k != EnvelopeHostPing || len(b) != HostPingSize {
		return c, fmt.Errorf("%w: not a host ping", ErrMalformed)
	}
	copy(c[:], b[batchPrefix:])
	return c, nil
}
