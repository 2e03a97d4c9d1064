package raftbridge

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// fuzzSeeds are valid envelopes of every kind, damaged ones and noise; the
// committed corpus under testdata/fuzz/FuzzDecodeEnvelope holds more.
func fuzzSeeds(t testing.TB) [][]byte {
	r := rand.New(rand.NewPCG(11, 12))
	h := randHeader(r)
	app, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{msgApp(3, 2, 4, 16)})
	if err != nil {
		t.Fatal(err)
	}
	beats, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{
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
	many, err := wire.AppendEnvelope(nil, &h, mixed)
	if err != nil {
		t.Fatal(err)
	}
	chunk := appendSnapChunk(nil, &snapChunk{Header: h, Transfer: 9, Term: 2, Index: 50, Chunk: 0, Chunks: 3, Size: 30, CRC: 77, Meta: []byte{8, 7}, Data: bytes.Repeat([]byte{1}, 10)})
	chunk2 := appendSnapChunk(nil, &snapChunk{Header: h, Transfer: 9, Term: 2, Index: 50, Chunk: 2, Chunks: 3, Size: 30, CRC: 77, Data: bytes.Repeat([]byte{3}, 10)})
	ack := appendSnapAck(nil, &snapAck{Header: h, Transfer: 9, Index: 50, Status: ackGap, Next: 1})
	future := bytes.Clone(app)
	future[2] = wire.MaxVersion + 1
	return [][]byte{
		app, beats, many, chunk, chunk2, ack, future,
		app[:len(app)/2], beats[:wire.HeaderSize+1], chunk[:wire.HeaderSize+10], ack[:len(ack)-1],
		randBytes(r, 64), randBytes(r, wire.HeaderSize+40), {}, {'R', 'B', wire.MaxVersion},
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
		h, body, err := wire.DecodeHeader(data)
		if err != nil {
			return
		}
		switch h.Kind {
		case wire.EnvelopeMessages:
			env, err := wire.DecodeEnvelope(data)
			if err != nil {
				return
			}
			re, err := wire.AppendEnvelope(nil, &env.Header, env.Messages)
			if err != nil {
				t.Fatalf("re-encode of a decoded envelope: %v", err)
			}
			env2, err := wire.DecodeEnvelope(re)
			if err != nil {
				t.Fatalf("decode of a re-encoded envelope: %v", err)
			}
			if env2.Header != env.Header {
				t.Fatalf("header %+v after re-encoding, want %+v", env2.Header, env.Header)
			}
			equalMessages(t, env.Messages, env2.Messages)
			re2, err := wire.AppendEnvelope(nil, &env2.Header, env2.Messages)
			if err != nil || !bytes.Equal(re, re2) {
				t.Fatalf("encoding is not stable (%v)", err)
			}
		case wire.EnvelopeSnapChunk:
			c, err := decodeSnapChunk(h, body)
			if err != nil {
				return
			}
			re := appendSnapChunk(nil, c)
			if !bytes.Equal(re, data) {
				t.Fatalf("chunk re-encodes to different bytes")
			}
		case wire.EnvelopeSnapAck:
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

// Fixed identities for FuzzDeliver, so that its seeds stay meaningful
// across runs: node 1 is the bridge, 2 and 3 are members, 9 was removed.
var (
	fuzzCluster  = uuid.MustParse("0195a1b2-0000-7000-8000-0000000000c1")
	fuzzSelf     = uuid.MustParse("0195a1b2-0000-7000-8000-000000000001")
	fuzzPeer     = uuid.MustParse("0195a1b2-0000-7000-8000-000000000002")
	fuzzOther    = uuid.MustParse("0195a1b2-0000-7000-8000-000000000003")
	fuzzRemoved  = uuid.MustParse("0195a1b2-0000-7000-8000-000000000009")
	fuzzStranger = uuid.MustParse("0195a1b2-0000-7000-8000-0000000000ff")
	// fuzzSources are the subject source tokens an input may pick.
	fuzzSources = []uuid.UUID{fuzzPeer, fuzzOther, fuzzRemoved, fuzzStranger, fuzzSelf}
	fuzzKinds   = []bus.Kind{bus.KindMsg, bus.KindSnap, "zzz"}
)

// fuzzRaft counts what the bridge hands it, and refuses nothing. Complete
// snapshots go to ReceiveSnapshot, so Process is only ever called from
// inside deliver.
type fuzzRaft struct {
	mu        sync.Mutex
	processed int
	strangers []uint64 // From of every message stepped that is not a member
}

func (f *fuzzRaft) Process(_ context.Context, m *raftpb.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.processed++
	if from := m.GetFrom(); from != 1 && from != 2 && from != 3 {
		f.strangers = append(f.strangers, from)
	}
	return nil
}

func (f *fuzzRaft) ReceiveSnapshot(context.Context, *raftpb.Message) error { return nil }
func (f *fuzzRaft) ReportUnreachable(uint64)                               {}
func (f *fuzzRaft) ReportSnapshot(uint64, raft.SnapshotStatus)             {}

func (f *fuzzRaft) state() (int, []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.processed, append([]uint64(nil), f.strangers...)
}

func fuzzDeliverSeeds(t testing.TB) [][]byte {
	self := wire.Endpoint{ID: 1, Incarnation: fuzzSelf}
	peer := wire.Endpoint{ID: 2, Incarnation: fuzzPeer}
	stranger := wire.Endpoint{ID: 4, Incarnation: fuzzStranger}
	env := func(from wire.Endpoint, msgs ...*raftpb.Message) []byte {
		return envelope(t, fuzzCluster, from, self, msgs...)
	}
	meta, err := proto.Marshal(withoutSnapshotData(msgSnap(2, 1, nil)))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("0123456789")
	chunk := func(from wire.Endpoint, n uint32, part []byte, meta []byte) []byte {
		return appendSnapChunk(nil, &snapChunk{Header: wire.Header{Cluster: fuzzCluster, From: from, To: self},
			Transfer: 5, Term: 4, Index: 1000, Chunk: n, Chunks: 2, Size: uint64(len(data)), CRC: crc32Of(data), Meta: meta, Data: part})
	}
	return [][]byte{
		env(peer, heartbeat(2, 1), msgApp(2, 1, 3, 8)),
		env(peer, readIndex(3, 1, "fwd"), readIndex(77, 1, "stranger"), heartbeat(3, 1)),
		env(wire.Endpoint{ID: 3, Incarnation: fuzzOther}, poison(3, 1)),
		env(stranger, poison(4, 1)),
		env(wire.Endpoint{ID: 9, Incarnation: fuzzRemoved}, poison(9, 1)),
		chunk(peer, 0, data[:5], meta),
		chunk(peer, 1, data[5:], nil),
		chunk(stranger, 0, data[:5], meta),
		appendSnapAck(nil, &snapAck{Header: wire.Header{Cluster: fuzzCluster, From: peer, To: self}, Transfer: 5, Index: 1000, Status: ackProgress, Next: 1}),
		{}, {'R', 'B', wire.MaxVersion},
	}
}

// FuzzDeliver feeds arbitrary payloads, on arbitrary subjects, through the
// whole inbound path (header, identity checks, body, per-message checks,
// the snapshot receiver) into a fake Raft. The bridge must never panic,
// nothing from a sender that is not a member may reach Raft, and nothing
// may be sent to an incarnation that is not a member.
func FuzzDeliver(f *testing.F) {
	for _, s := range fuzzDeliverSeeds(f) {
		// Each seed on the subject its envelope claims, and once on the
		// wrong source.
		src, kind := uint8(0), uint8(0)
		if h, _, err := wire.DecodeHeader(s); err == nil {
			for i, inc := range fuzzSources {
				if inc == h.From.Incarnation {
					src = uint8(i)
				}
			}
			if h.Kind != wire.EnvelopeMessages {
				kind = 1
			}
		}
		f.Add(src, kind, s)
		f.Add(src+1, kind, s)
	}
	dir := NewMemDirectory()
	dir.Set(1, fuzzSelf)
	dir.Set(2, fuzzPeer)
	dir.Set(3, fuzzOther)
	dir.Set(9, fuzzRemoved)
	dir.Remove(9)
	r := &fuzzRaft{}
	cb := &captureBus{}
	b, err := New(Config{Cluster: fuzzCluster, ID: 1, Incarnation: fuzzSelf, Bus: cb, Directory: dir, Raft: r,
		MaxSnapshotBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	f.Fuzz(func(t *testing.T, src, kind uint8, data []byte) {
		d := bus.Delivery{
			Cluster: fuzzCluster, To: fuzzSelf,
			From: fuzzSources[int(src)%len(fuzzSources)],
			Kind: fuzzKinds[int(kind)%len(fuzzKinds)],
			Data: data,
		}
		before, _ := r.state()
		receiver{b}.Deliver(d)
		after, strangers := r.state()
		if len(strangers) != 0 {
			t.Fatalf("raft stepped messages from non-members %x", strangers)
		}
		if after != before {
			h, _, err := wire.DecodeHeader(data)
			member := err == nil && d.From == h.From.Incarnation &&
				(h.From == wire.Endpoint{ID: 2, Incarnation: fuzzPeer} || h.From == wire.Endpoint{ID: 3, Incarnation: fuzzOther})
			if !member {
				t.Fatalf("raft stepped %d messages from a delivery by %+v on subject source %s", after-before, h.From, d.From)
			}
		}
		for _, p := range cb.payloads() {
			if p.to != fuzzPeer && p.to != fuzzOther {
				t.Fatalf("sent a payload to %s, not a member", p.to)
			}
		}
		cb.mu.Lock()
		cb.sent = cb.sent[:0] // keep the check linear in the input
		cb.mu.Unlock()
	})
}
