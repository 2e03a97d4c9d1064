package raftbridge

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// fuzzSeeds are valid envelopes of every kind, damaged ones and noise; the
// committed corpus under testdata/fuzz/FuzzDecodeEnvelope holds more.
func fuzzSeeds(t testing.TB) [][]byte {
	r := rand.New(rand.NewPCG(11, 12))
	h := randHeader(r)
	app, err := AppendEnvelope(nil, &h, []*raftpb.Message{msgApp(3, 2, 4, 16)})
	if err != nil {
		t.Fatal(err)
	}
	beats, err := AppendEnvelope(nil, &h, []*raftpb.Message{
		{Type: raftpb.MsgHeartbeat.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(5), Commit: proto.Uint64(100)},
		{Type: raftpb.MsgAppResp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(5), Index: proto.Uint64(100)},
	})
	if err != nil {
		t.Fatal(err)
	}
	mixed := make([]*raftpb.Message, 8)
	for i := range mixed {
		mixed[i] = randMessage(r)
	}
	many, err := AppendEnvelope(nil, &h, mixed)
	if err != nil {
		t.Fatal(err)
	}
	chunk := appendSnapChunk(nil, &snapChunk{Header: h, Transfer: 9, Term: 2, Index: 50, Chunk: 0, Chunks: 3, Size: 30, CRC: 77, Meta: []byte{8, 7}, Data: bytes.Repeat([]byte{1}, 10)})
	chunk2 := appendSnapChunk(nil, &snapChunk{Header: h, Transfer: 9, Term: 2, Index: 50, Chunk: 2, Chunks: 3, Size: 30, CRC: 77, Data: bytes.Repeat([]byte{3}, 10)})
	ack := appendSnapAck(nil, &snapAck{Header: h, Transfer: 9, Index: 50, Status: ackGap, Next: 1})
	future := bytes.Clone(app)
	future[2] = MaxVersion + 1
	return [][]byte{
		app, beats, many, chunk, chunk2, ack, future,
		app[:len(app)/2], beats[:HeaderSize+1], chunk[:HeaderSize+10], ack[:len(ack)-1],
		randBytes(r, 64), randBytes(r, HeaderSize+40), {}, {magic0, magic1, MaxVersion},
	}
}

// FuzzDecodeEnvelope feeds arbitrary bytes to the decoders, which must
// never panic. Whatever decodes must re-encode, decode again to the same
// value and re-encode to the same bytes.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, body, err := DecodeHeader(data)
		if err != nil {
			return
		}
		switch h.Kind {
		case EnvelopeMessages:
			env, err := DecodeEnvelope(data)
			if err != nil {
				return
			}
			re, err := AppendEnvelope(nil, &env.Header, env.Messages)
			if err != nil {
				t.Fatalf("re-encode of a decoded envelope: %v", err)
			}
			env2, err := DecodeEnvelope(re)
			if err != nil {
				t.Fatalf("decode of a re-encoded envelope: %v", err)
			}
			if env2.Header != env.Header {
				t.Fatalf("header %+v after re-encoding, want %+v", env2.Header, env.Header)
			}
			equalMessages(t, env.Messages, env2.Messages)
			re2, err := AppendEnvelope(nil, &env2.Header, env2.Messages)
			if err != nil || !bytes.Equal(re, re2) {
				t.Fatalf("encoding is not stable (%v)", err)
			}
		case EnvelopeSnapChunk:
			c, err := decodeSnapChunk(h, body)
			if err != nil {
				return
			}
			re := appendSnapChunk(nil, c)
			if !bytes.Equal(re, data) {
				t.Fatalf("chunk re-encodes to different bytes")
			}
		case EnvelopeSnapAck:
			a, err := decodeSnapAck(h, body)
			if err != nil {
				return
			}
			if re := appendSnapAck(nil, a); !bytes.Equal(re, data) {
				t.Fatalf("ack re-encodes to different bytes")
			}
		default:
			t.Fatalf("DecodeHeader accepted kind %d", h.Kind)
		}
	})
}
