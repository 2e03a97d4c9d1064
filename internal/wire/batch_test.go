package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func groupEnvelope(t testing.TB, group uint64) []byte {
	t.Helper()
	h := Header{Cluster: uuid.New(), Group: group, From: Endpoint{ID: 2, Incarnation: uuid.New()}, To: Endpoint{ID: 1, Incarnation: uuid.New()}}
	b, err := AppendEnvelope(nil, &h, []*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(2), To: proto.Uint64(1)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVersionByGroup(t *testing.T) {
	for _, g := range []uint64{0, 1, 1 << 63} {
		env := groupEnvelope(t, g)
		h, _, err := DecodeHeader(env)
		if err != nil {
			t.Fatal(err)
		}
		if want := versionFor(g); h.Version != want || h.Group != g {
			t.Fatalf("group %d: version %d group %d, want version %d", g, h.Version, h.Group, want)
		}
		if pg, err := PeekGroup(env); err != nil || pg != g {
			t.Fatalf("PeekGroup = %d, %v; want %d", pg, err, g)
		}
	}
	// Group 0 has one encoding: version 2 naming group 0 is malformed.
	env := groupEnvelope(t, 5)
	copy(env[HeaderSize:HeaderSizeV2], make([]byte, 8))
	if _, _, err := DecodeHeader(env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 2 of group 0: %v, want ErrMalformed", err)
	}
	// A truncated version 2 header.
	if _, _, err := DecodeHeader(groupEnvelope(t, 5)[:HeaderSize+4]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated version 2 header: %v, want ErrMalformed", err)
	}
}

func TestBatchRoundTripAndRefusals(t *testing.T) {
	envs := [][]byte{groupEnvelope(t, 0), groupEnvelope(t, 3), groupEnvelope(t, 9)}
	b, err := AppendBatch(nil, envs)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != BatchSize(envs) {
		t.Fatalf("batch of %d bytes, BatchSize says %d", len(b), BatchSize(envs))
	}
	got, err := DecodeBatch(b)
	if err != nil || len(got) != 3 {
		t.Fatalf("DecodeBatch: %d envelopes, %v", len(got), err)
	}
	for i := range envs {
		if !bytes.Equal(got[i], envs[i]) {
			t.Fatalf("envelope %d differs", i)
		}
	}
	nested, _ := AppendBatch(nil, [][]byte{b})
	ping := AppendHostPing(nil, uuid.New())
	withPing, _ := AppendBatch(nil, [][]byte{ping})
	for name, bad := range map[string][]byte{
		"nested":    nested,
		"ping":      withPing,
		"truncated": b[:len(b)-1],
		"trailing":  append(bytes.Clone(b), 0),
		"zero":      {'R', 'B', 2, 4, 0},
		"huge":      {'R', 'B', 2, 4, 0xff, 0xff, 0x03},
		"version 1": append([]byte{'R', 'B', 1, 4}, b[4:]...),
	} {
		if _, err := DecodeBatch(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := AppendBatch(nil, nil); err == nil {
		t.Fatal("an empty batch was encoded")
	}
	c := uuid.New()
	if got, err := DecodeHostPing(AppendHostPing(nil, c)); err != nil || got != c {
		t.Fatalf("host ping round trip: %s, %v", got, err)
	}
	if _, err := DecodeHostPing(append(AppendHostPing(nil, c), 0)); err == nil {
		t.Fatal("a host ping with a trailing byte was accepted")
	}
}

// FuzzDecodeBatch: no input panics, and every envelope a batch yields is a
// group envelope lying inside the input.
func FuzzDecodeBatch(f *testing.F) {
	b, _ := AppendBatch(nil, [][]byte{groupEnvelope(f, 0), groupEnvelope(f, 7)})
	f.Add(b)
	f.Add(AppendHostPing(nil, uuid.New()))
	f.Add([]byte{'R', 'B', 2, 4, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = PeekGroup(data)
		_, _ = DecodeHostPing(data)
		envs, err := DecodeBatch(data)
		if err != nil {
			return
		}
		for _, e := range envs {
			if k, ok := PayloadKind(e); !ok || k > EnvelopeSnapAck {
				t.Fatalf("batch yielded a payload of kind %d", k)
			}
			_, _, _ = DecodeHeader(e)
		}
	})
}
