package kv

import (
	"encoding/binary"
	"fmt"
)

// A command is the data of one Raft entry proposed by the kv package:
//
//	command = version(1) op(1) keylen(uvarint) key{keylen} [vallen(uvarint) value{vallen}]
//
// version is 1. op is 1 (put, which carries the value part) or 2 (delete,
// which does not). The key is at least one byte long. A command with trailing
// bytes, an unknown version or op, or a length larger than the bytes that
// follow is malformed: it is rejected identically on every node, so a bad
// entry in the log is skipped everywhere and cannot fork the replicas.
const (
	commandVersion = 1
	// commandHeader is version + op.
	commandHeader = 2
)

// Op names the operation of a command.
type Op uint8

// Operations of the state machine. The numeric values are part of the
// replicated log format and never change.
const (
	// OpPut sets a key to a value, creating the key if needed.
	OpPut Op = 1
	// OpDelete removes a key; deleting a missing key is not an error.
	OpDelete Op = 2
)

// String returns "put", "delete" or "op(N)".
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	default:
		return fmt.Sprintf("op(%d)", uint8(o))
	}
}

// Command is a decoded state machine command.
type Command struct {
	Op  Op
	Key string
	// Value is the new value of a put (empty values are allowed) and nil for
	// a delete. After DecodeCommand it is a copy owned by the caller.
	Value []byte
}

// EncodePut returns the command that sets key to value. The key must not be
// empty: a command with an empty key is rejected by DecodeCommand and by
// Store.Apply. The value is copied; value may be nil (an empty value).
func EncodePut(key string, value []byte) []byte {
	b := make([]byte, 0, commandHeader+uvarintLen(uint64(len(key)))+len(key)+
		uvarintLen(uint64(len(value)))+len(value))
	b = append(b, commandVersion, byte(OpPut))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// EncodeDelete returns the command that removes key. The key must not be
// empty (see EncodePut).
func EncodeDelete(key string) []byte {
	b := make([]byte, 0, commandHeader+uvarintLen(uint64(len(key)))+len(key))
	b = append(b, commandVersion, byte(OpDelete))
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

// DecodeCommand parses a command produced by EncodePut or EncodeDelete.
// Malformed input yields an error wrapping ErrBadCommand; it never panics and
// never allocates more than len(data) bytes.
func DecodeCommand(data []byte) (Command, error) {
	if len(data) < commandHeader {
		return Command{}, fmt.Errorf("%w: %d bytes, shorter than the header", ErrBadCommand, len(data))
	}
	if data[0] != commandVersion {
		return Command{}, fmt.Errorf("%w: unsupported version %d", ErrBadCommand, data[0])
	}
	op := Op(data[1])
	if op != OpPut && op != OpDelete {
		return Command{}, fmt.Errorf("%w: unknown %v", ErrBadCommand, op)
	}
	rest := data[commandHeader:]
	key, rest, err := cutLengthPrefixed(rest)
	if err != nil {
		return Command{}, fmt.Errorf("%w: key: %w", ErrBadCommand, err)
	}
	if len(key) == 0 {
		return Command{}, fmt.Errorf("%w: empty key", ErrBadCommand)
	}
	cmd := Command{Op: op, Key: string(key)}
	if op == OpPut {
		var value []byte
		value, rest, err = cutLengthPrefixed(rest)
		if err != nil {
			return Command{}, fmt.Errorf("%w: value: %w", ErrBadCommand, err)
		}
		// The entry's buffer belongs to the node; the store keeps the value.
		cmd.Value = append(make([]byte, 0, len(value)), value...)
	}
	if len(rest) != 0 {
		return Command{}, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(rest))
	}
	return cmd, nil
}

// cutLengthPrefixed splits a uvarint length and that many bytes off b.
func cutLengthPrefixed(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, errBadVarint
	}
	b = b[k:]
	if n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("length %d exceeds the %d bytes left", n, len(b))
	}
	return b[:n:n], b[n:], nil
}

// uvarintLen is the size of x encoded by binary.AppendUvarint.
func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
