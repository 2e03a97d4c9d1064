package raftbridge

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/internal/wire"
)

// networkTypes are the message types that travel between nodes.
var networkTypes = []raftpb.MessageType{
	raftpb.MsgProp, raftpb.MsgApp, raftpb.MsgAppResp, raftpb.MsgVote, raftpb.MsgVoteResp,
	raftpb.MsgSnap, raftpb.MsgHeartbeat, raftpb.MsgHeartbeatResp, raftpb.MsgTransferLeader,
	raftpb.MsgTimeoutNow, raftpb.MsgReadIndex, raftpb.MsgReadIndexResp, raftpb.MsgPreVote,
	raftpb.MsgPreVoteResp, raftpb.MsgForgetLeader,
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randUUID(r *rand.Rand) uuid.UUID {
	var u uuid.UUID
	copy(u[:], randBytes(r, 16))
	return u
}

// randMessage builds a message with a random subset of fields set,
// including entries and, for MsgSnap, snapshot metadata and data.
func randMessage(r *rand.Rand) *raftpb.Message {
	t := networkTypes[r.IntN(len(networkTypes))]
	m := &raftpb.Message{
		Type: t.Enum(),
		To:   proto.Uint64(r.Uint64N(1 << 20)),
		From: proto.Uint64(r.Uint64N(1 << 20)),
		Term: proto.Uint64(r.Uint64()),
	}
	if r.IntN(2) == 0 {
		m.LogTerm = proto.Uint64(r.Uint64())
		m.Index = proto.Uint64(r.Uint64())
		m.Commit = proto.Uint64(r.Uint64N(1 << 40))
	}
	if r.IntN(4) == 0 {
		m.Reject = proto.Bool(r.IntN(2) == 0)
		m.RejectHint = proto.Uint64(r.Uint64())
		m.Vote = proto.Uint64(r.Uint64N(16))
	}
	if r.IntN(4) == 0 {
		m.Context = randBytes(r, r.IntN(32))
	}
	for range r.IntN(6) {
		e := &raftpb.Entry{
			Term:  proto.Uint64(r.Uint64N(1 << 30)),
			Index: proto.Uint64(r.Uint64N(1 << 40)),
			Type:  raftpb.EntryType(r.IntN(3)).Enum(),
		}
		if r.IntN(3) != 0 {
			e.Data = randBytes(r, r.IntN(300))
		}
		m.Entries = append(m.Entries, e)
	}
	if t == raftpb.MsgSnap {
		m.Snapshot = &raftpb.Snapshot{
			Data: randBytes(r, r.IntN(2000)),
			Metadata: &raftpb.SnapshotMetadata{
				Index: proto.Uint64(r.Uint64()),
				Term:  proto.Uint64(r.Uint64()),
				ConfState: &raftpb.ConfState{
					Voters:    []uint64{1, 2, r.Uint64N(100)},
					Learners:  []uint64{r.Uint64N(100) + 100},
					AutoLeave: proto.Bool(r.IntN(2) == 0),
				},
			},
		}
	}
	return m
}

func randHeader(r *rand.Rand) wire.Header {
	return wire.Header{
		Cluster:          randUUID(r),
		From:             wire.Endpoint{ID: r.Uint64(), Incarnation: randUUID(r)},
		To:               wire.Endpoint{ID: r.Uint64(), Incarnation: randUUID(r)},
		DirectoryVersion: r.Uint64(),
	}
}

// withGroup gives every other header a group, so round trips cover both
// envelope versions.
func withGroup(r *rand.Rand, h wire.Header, i int) wire.Header {
	if i%2 == 1 {
		h.Group = 1 + r.Uint64N(1<<40)
	}
	return h
}

// versionOf is the envelope version written for group.
func versionOf(group uint64) uint8 {
	if group == 0 {
		return 1
	}
	return 2
}

func equalMessages(t *testing.T, want, got []*raftpb.Message) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			t.Fatalf("message %d differs:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var buf []byte
	for i := range 500 {
		h := withGroup(r, randHeader(r), i)
		msgs := make([]*raftpb.Message, 1+r.IntN(20))
		for j := range msgs {
			msgs[j] = randMessage(r)
		}
		size := wire.EnvelopeSize(h.Group, msgs)
		var err error
		// Alternate between a fresh and a reused buffer with stale bytes.
		if i%2 == 0 {
			buf = nil
		}
		buf, err = wire.AppendEnvelope(buf[:0], &h, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if len(buf) != size {
			t.Fatalf("encoded %d bytes, wire.EnvelopeSize said %d", len(buf), size)
		}
		env, err := wire.DecodeEnvelope(buf)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		want := h
		want.Version, want.Kind = versionOf(h.Group), wire.EnvelopeMessages
		if env.Header != want {
			t.Fatalf("header %+v, want %+v", env.Header, want)
		}
		equalMessages(t, msgs, env.Messages)
	}
}

func TestAppendEnvelopeRejectsBadBatches(t *testing.T) {
	h := wire.Header{}
	if _, err := wire.AppendEnvelope(nil, &h, nil); err == nil {
		t.Error("empty batch accepted")
	}
	if _, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{nil}); err == nil {
		t.Error("nil message accepted")
	}
	many := make([]*raftpb.Message, wire.MaxMessagesPerEnvelope+1)
	for i := range many {
		many[i] = &raftpb.Message{}
	}
	if _, err := wire.AppendEnvelope(nil, &h, many); err == nil {
		t.Error("oversized batch accepted")
	}
}

func validEnvelope(t testing.TB) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	h := randHeader(r)
	b, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{randMessage(r), randMessage(r), randMessage(r)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEnvelopeRejectsMalformed(t *testing.T) {
	valid := validEnvelope(t)
	patch := func(off int, b ...byte) []byte {
		c := bytes.Clone(valid)
		copy(c[off:], b)
		return c
	}
	// The body starts with the message count (1 byte for 3), then the
	// first message's length.
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, wire.ErrMalformed},
		{"two bytes", valid[:2], wire.ErrMalformed},
		{"bad magic", patch(0, 'X'), wire.ErrMalformed},
		{"version 0", patch(2, 0), wire.ErrVersion},
		{"version 2", patch(2, wire.MaxVersion+1), wire.ErrVersion},
		{"version 255", patch(2, 255), wire.ErrVersion},
		{"header only", valid[:wire.HeaderSize], wire.ErrMalformed},
		{"unknown kind", patch(3, 9), wire.ErrMalformed},
		{"snap kind", patch(3, byte(wire.EnvelopeSnapChunk)), wire.ErrMalformed},
		{"zero count", patch(wire.HeaderSize, 0), wire.ErrMalformed},
		{"count too large", patch(wire.HeaderSize, 100), wire.ErrMalformed},
		{"count above limit", append(append(bytes.Clone(valid[:wire.HeaderSize]), 0x81, 0x40), make([]byte, 5000)...), wire.ErrMalformed},
		{"length beyond end", patch(wire.HeaderSize+1, 0xff, 0xff, 0xff, 0x0f), wire.ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), wire.ErrMalformed},
		{"bad varint count", append(bytes.Clone(valid[:wire.HeaderSize]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), wire.ErrMalformed},
		{"bad protobuf", append(bytes.Clone(valid[:wire.HeaderSize]), 1, 2, 0xff, 0xff), wire.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.DecodeEnvelope(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeEnvelopeRejectsEveryTruncation(t *testing.T) {
	valid := validEnvelope(t)
	for n := range len(valid) {
		if _, err := wire.DecodeEnvelope(valid[:n]); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("truncated to %d of %d bytes: error %v, want wire.ErrMalformed", n, len(valid), err)
		}
	}
}

func TestDecodeHeaderChecksVersionBeforeLength(t *testing.T) {
	// A future version may have a shorter header: its version must be
	// reported as such, not as truncation.
	_, _, err := wire.DecodeHeader([]byte{'R', 'B', wire.MaxVersion + 1})
	if !errors.Is(err, wire.ErrVersion) {
		t.Fatalf("error %v, want wire.ErrVersion", err)
	}
}

func TestSnapChunkRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 200 {
		c := snapChunk{
			Header:   withGroup(r, randHeader(r), i),
			Transfer: r.Uint64(), Term: r.Uint64(), Index: r.Uint64(),
			Chunks: 1 + r.Uint32N(100), Size: 1000 + r.Uint64N(1<<30), CRC: r.Uint32(),
		}
		c.Chunk = r.Uint32N(c.Chunks)
		c.Data = randBytes(r, r.IntN(1000))
		if c.Chunk == 0 {
			c.Meta = randBytes(r, 1+r.IntN(100))
		}
		b := appendSnapChunk(nil, &c)
		h, body, err := wire.DecodeHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeSnapChunk(h, body)
		if err != nil {
			t.Fatal(err)
		}
		want := c
		want.Version, want.Kind = versionOf(want.Group), wire.EnvelopeSnapChunk
		if got.Header != want.Header || got.Transfer != want.Transfer || got.Term != want.Term ||
			got.Index != want.Index || got.Chunk != want.Chunk || got.Chunks != want.Chunks ||
			got.Size != want.Size || got.CRC != want.CRC || !bytes.Equal(got.Meta, want.Meta) || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("chunk %+v, want %+v", got, want)
		}
		for n := range len(b) {
			h, body, err := wire.DecodeHeader(b[:n])
			if err == nil {
				_, err = decodeSnapChunk(h, body)
			}
			if err == nil {
				t.Fatalf("chunk truncated to %d of %d bytes decoded", n, len(b))
			}
		}
	}
}

func TestSnapChunkRejectsInconsistentFields(t *testing.T) {
	base := snapChunk{Transfer: 1, Term: 2, Index: 3, Chunk: 0, Chunks: 2, Size: 10, CRC: 4, Meta: []byte{1}, Data: []byte{1, 2, 3}}
	tests := map[string]func(c *snapChunk){
		"zero chunks":           func(c *snapChunk) { c.Chunks = 0 },
		"chunk beyond total":    func(c *snapChunk) { c.Chunk, c.Meta = 2, nil },
		"more chunks than data": func(c *snapChunk) { c.Chunks = 11 },
		"data beyond size":      func(c *snapChunk) { c.Size = 2; c.Chunks = 1 },
		"chunk 0 without meta":  func(c *snapChunk) { c.Meta = nil },
		"meta on chunk 1":       func(c *snapChunk) { c.Chunk = 1 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := base
			mutate(&c)
			h, body, err := wire.DecodeHeader(appendSnapChunk(nil, &c))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeSnapChunk(h, body); !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error %v, want wire.ErrMalformed", err)
			}
		})
	}
}

func TestSnapAckRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for st := ackProgress; st <= ackFailed; st++ {
		a := snapAck{Header: withGroup(r, randHeader(r), int(st)), Transfer: r.Uint64(), Index: r.Uint64(), Status: st, Next: r.Uint32()}
		b := appendSnapAck(nil, &a)
		h, body, err := wire.DecodeHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeSnapAck(h, body)
		if err != nil {
			t.Fatal(err)
		}
		a.Version, a.Kind = versionOf(a.Group), wire.EnvelopeSnapAck
		if *got != a {
			t.Fatalf("ack %+v, want %+v", got, a)
		}
		if _, err := decodeSnapAck(h, body[:len(body)-1]); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("short ack: error %v", err)
		}
		bad := bytes.Clone(body)
		bad[16] = byte(ackFailed + 1)
		if _, err := decodeSnapAck(h, bad); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("bad status: error %v", err)
		}
	}
}

func TestWithoutSnapshotDataKeepsEverythingButData(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 50 {
		m := randMessage(r)
		m.Type = raftpb.MsgSnap.Enum()
		m.Snapshot = &raftpb.Snapshot{
			Data:     randBytes(r, 100),
			Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(7), Term: proto.Uint64(3), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}},
		}
		before := proto.Clone(m).(*raftpb.Message)
		meta, err := proto.Marshal(withoutSnapshotData(m))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(m, before) {
			t.Fatal("withoutSnapshotData changed its input")
		}
		got := new(raftpb.Message)
		if err := proto.Unmarshal(meta, got); err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(m).(*raftpb.Message)
		want.Snapshot.Data = nil
		if !proto.Equal(got, want) {
			t.Fatalf("metadata %v, want %v", got, want)
		}
	}
}
