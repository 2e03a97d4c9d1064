package kv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCommandRoundTrip(t *testing.T) {
	long := strings.Repeat("k", 300) // two-byte length prefix
	tests := []struct {
		name string
		data []byte
		want Command
	}{
		{"put", EncodePut("a", []byte("1")), Command{Op: OpPut, Key: "a", Value: []byte("1")}},
		{"put empty value", EncodePut("a", nil), Command{Op: OpPut, Key: "a", Value: []byte{}}},
		{"put binary", EncodePut("\x00\xff", []byte{0, 1, 0xff}), Command{Op: OpPut, Key: "\x00\xff", Value: []byte{0, 1, 0xff}}},
		{"put long key and value", EncodePut(long, bytes.Repeat([]byte("v"), 70000)),
			Command{Op: OpPut, Key: long, Value: bytes.Repeat([]byte("v"), 70000)}},
		{"delete", EncodeDelete("ключ"), Command{Op: OpDelete, Key: "ключ"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeCommand(tc.data)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if got.Op != tc.want.Op || got.Key != tc.want.Key || !bytes.Equal(got.Value, tc.want.Value) {
				t.Fatalf("got %v %q %q, want %v %q %q", got.Op, got.Key, got.Value, tc.want.Op, tc.want.Key, tc.want.Value)
			}
			if tc.want.Op == OpDelete && got.Value != nil {
				t.Fatalf("delete decoded with value %q", got.Value)
			}
		})
	}
}

func TestDecodeCommandCopiesValue(t *testing.T) {
	data := EncodePut("k", []byte("value"))
	cmd, err := DecodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'X'
	}
	if cmd.Key != "k" || string(cmd.Value) != "value" {
		t.Fatalf("decoded command aliases its input: %q %q", cmd.Key, cmd.Value)
	}
}

func TestDecodeCommandRejectsMalformed(t *testing.T) {
	put := EncodePut("key", []byte("value"))
	del := EncodeDelete("key")
	tests := []struct {
		name string
		data []byte
		why  string
	}{
		{"nil", nil, "shorter than the header"},
		{"one byte", []byte{1}, "shorter than the header"},
		{"version 0", append([]byte{0}, put[1:]...), "unsupported version 0"},
		{"version 2", append([]byte{2}, put[1:]...), "unsupported version 2"},
		{"op 0", []byte{1, 0, 1, 'k'}, "unknown op(0)"},
		{"op 3", []byte{1, 3, 1, 'k'}, "unknown op(3)"},
		{"no key length", []byte{1, 2}, "key"},
		{"truncated varint", []byte{1, 2, 0x80}, "key"},
		{"overlong varint", append([]byte{1, 2}, bytes.Repeat([]byte{0xff}, 11)...), "key"},
		{"key longer than data", []byte{1, 2, 5, 'a', 'b'}, "exceeds"},
		{"empty key", []byte{1, 2, 0}, "empty key"},
		{"put without value", put[:2+1+3], "value"},
		{"value longer than data", put[:len(put)-1], "exceeds"},
		{"put trailing", append(bytes.Clone(put), 0), "1 trailing bytes"},
		{"delete trailing", append(bytes.Clone(del), 'x'), "1 trailing bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand(tc.data)
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeCommand(%x) = %v, want ErrBadCommand", tc.data, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("error %q does not mention %q", err, tc.why)
			}
		})
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{OpPut: "put", OpDelete: "delete", 9: "op(9)"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", uint8(op), got, want)
		}
	}
}

// FuzzDecodeCommand checks that arbitrary entry data never panics the
// decoder or the Store, that failures are ErrBadCommand, and that whatever
// decodes re-encodes to a command that decodes the same.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(EncodePut("a", []byte("b")))
	f.Add(EncodePut("key/with/slashes", nil))
	f.Add(EncodePut(strings.Repeat("x", 200), bytes.Repeat([]byte{0xff}, 200)))
	f.Add(EncodeDelete("a"))
	f.Add([]byte{})
	f.Add([]byte{1, 1})
	f.Add([]byte{1, 2, 0x80, 0x80, 0x80})
	f.Add([]byte{1, 1, 1, 'k', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		s := NewStore()
		res, applyErr := s.Apply(1, data)
		if s.AppliedIndex() != 1 {
			t.Fatalf("applied index %d after Apply(1)", s.AppliedIndex())
		}
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			if len(data) > 0 && (!errors.Is(applyErr, ErrBadCommand) || res != nil || s.Len() != 0) {
				t.Fatalf("Apply of a bad command: %v, %v, %d keys", res, applyErr, s.Len())
			}
			return
		}
		var again []byte
		switch cmd.Op {
		case OpPut:
			again = EncodePut(cmd.Key, cmd.Value)
		case OpDelete:
			again = EncodeDelete(cmd.Key)
		default:
			t.Fatalf("decoded unknown op %v", cmd.Op)
		}
		cmd2, err := DecodeCommand(again)
		if err != nil || cmd2.Op != cmd.Op || cmd2.Key != cmd.Key || !bytes.Equal(cmd2.Value, cmd.Value) {
			t.Fatalf("re-encoding changed the command: %+v -> %+v, %v", cmd, cmd2, err)
		}
		if applyErr != nil {
			t.Fatalf("Apply of a valid command: %v", applyErr)
		}
		if r, ok := res.(Result); !ok || r.Op != cmd.Op || r.Key != cmd.Key || r.Index != 1 {
			t.Fatalf("Apply result %#v for %+v", res, cmd)
		}
	})
}
