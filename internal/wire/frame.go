package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A frame is what one network message carries: one or more payloads that
// were queued for the same destination and kind, coalesced by the sender.
//
//	frame   = magic(1) version(1) count(uvarint) payload{count}
//	payload = length(uvarint) bytes{length}
//
// magic is 0xB5, version is 1. A frame with trailing bytes, a zero count, a
// count or length larger than the bytes that follow, is malformed.
const (
	frameMagic   = 0xB5
	frameVersion = 1
	// FrameOverhead is the fixed part of a frame's size.
	FrameOverhead = 2 + binary.MaxVarintLen32
)

// ErrBadFrame is wrapped by DecodeFrame errors.
var ErrBadFrame = errors.New("wire: malformed frame")

// MaxPayload returns the largest payload a bus whose frames are limited to
// maxFrameBytes accepts: the payload alone must fit a frame, counting the
// header at its largest. Larger payloads are refused with ErrTooLarge.
func MaxPayload(maxFrameBytes int) int {
	n := maxFrameBytes - FrameOverhead
	for n > 0 && FrameSize(n) > maxFrameBytes-FrameOverhead {
		n--
	}
	return max(n, 0)
}

// FrameSize returns how many bytes a payload of length n adds to a frame.
func FrameSize(n int) int {
	return UvarintLen(uint64(n)) + n
}

// AppendFrame appends a frame holding payloads to dst and returns it.
func AppendFrame(dst []byte, payloads [][]byte) []byte {
	dst = append(dst, frameMagic, frameVersion)
	dst = binary.AppendUvarint(dst, uint64(len(payloads)))
	for _, p := range payloads {
		dst = binary.AppendUvarint(dst, uint64(len(p)))
		dst = append(dst, p...)
	}
	return dst
}

// DecodeFrame splits a frame into its payloads, calling fn for each. The
// slices passed to fn alias frame. It validates the whole frame before the
// first call, so fn sees either every payload or none.
func DecodeFrame(frame []byte, fn func(payload []byte)) error {
	count, body, err := frameHeader(frame)
	if err != nil {
		return err
	}
	// First pass: validate, so a malformed frame delivers nothing.
	rest := body
	for i := uint64(0); i < count; i++ {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return fmt.Errorf("%w: payload %d of %d is truncated", ErrBadFrame, i+1, count)
		}
		rest = rest[k+int(n):]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadFrame, len(rest))
	}
	rest = body
	for i := uint64(0); i < count; i++ {
		n, k := binary.Uvarint(rest)
		fn(rest[k : k+int(n) : k+int(n)])
		rest = rest[k+int(n):]
	}
	return nil
}

func frameHeader(frame []byte) (uint64, []byte, error) {
	if len(frame) < 3 {
		return 0, nil, fmt.Errorf("%w: %d bytes is shorter than a header", ErrBadFrame, len(frame))
	}
	if frame[0] != frameMagic {
		return 0, nil, fmt.Errorf("%w: bad magic 0x%02x", ErrBadFrame, frame[0])
	}
	if frame[1] != frameVersion {
		return 0, nil, fmt.Errorf("%w: unsupported frame version %d", ErrBadFrame, frame[1])
	}
	count, k := binary.Uvarint(frame[2:])
	if k <= 0 {
		return 0, nil, fmt.Errorf("%w: bad payload count", ErrBadFrame)
	}
	body := frame[2+k:]
	// Every payload takes at least one byte (its length), so a count above
	// the remaining length is a lie; checking it bounds the loops.
	if count == 0 || count > uint64(len(body)) {
		return 0, nil, fmt.Errorf("%w: payload count %d does not fit %d bytes", ErrBadFrame, count, len(body))
	}
	return count, body, nil
}
