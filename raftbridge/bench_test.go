package raftbridge

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// msgApp builds a MsgApp from 1 to 2 with n entries of size bytes each.
func msgApp(from, to uint64, n, size int) *raftpb.Message {
	m := &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(7), LogTerm: proto.Uint64(7), Index: proto.Uint64(1000), Commit: proto.Uint64(999),
	}
	for i := range n {
		m.Entries = append(m.Entries, &raftpb.Entry{
			Term: proto.Uint64(7), Index: proto.Uint64(uint64(1001 + i)), Type: raftpb.EntryNormal.Enum(),
			Data: bytes.Repeat([]byte{byte(i)}, size),
		})
	}
	return m
}

func heartbeat(from, to uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(7), Commit: proto.Uint64(999),
	}
}

var benchHeader = wire.Header{
	Cluster: uuid.MustParse("0195a1b2-0000-7000-8000-000000000001"),
	From:    wire.Endpoint{ID: 1, Incarnation: uuid.MustParse("0195a1b2-0000-7000-8000-000000000011")},
	To:      wire.Endpoint{ID: 2, Incarnation: uuid.MustParse("0195a1b2-0000-7000-8000-000000000012")},
}

func benchEncode(b *testing.B, msgs []*raftpb.Message) {
	buf, err := wire.AppendEnvelope(nil, &benchHeader, msgs)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = wire.AppendEnvelope(buf[:0], &benchHeader, msgs); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, msgs []*raftpb.Message) {
	buf, err := wire.AppendEnvelope(nil, &benchHeader, msgs)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.DecodeEnvelope(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeMsgApp64x128 encodes one MsgApp of 64 entries of 128 B
// into a reused buffer.
func BenchmarkEncodeMsgApp64x128(b *testing.B) {
	benchEncode(b, []*raftpb.Message{msgApp(1, 2, 64, 128)})
}

// BenchmarkDecodeMsgApp64x128 decodes the same envelope.
func BenchmarkDecodeMsgApp64x128(b *testing.B) {
	benchDecode(b, []*raftpb.Message{msgApp(1, 2, 64, 128)})
}

// heartbeatBatch is what a leader's Ready typically holds for one
// follower between proposals: a heartbeat and an empty append probe.
func heartbeatBatch() []*raftpb.Message {
	return []*raftpb.Message{heartbeat(1, 2), msgApp(1, 2, 0, 0)}
}

// BenchmarkEncodeHeartbeatBatch encodes a heartbeat batch.
func BenchmarkEncodeHeartbeatBatch(b *testing.B) {
	benchEncode(b, heartbeatBatch())
}

// BenchmarkDecodeHeartbeatBatch decodes a heartbeat batch.
func BenchmarkDecodeHeartbeatBatch(b *testing.B) {
	benchDecode(b, heartbeatBatch())
}

// discardBus accepts everything and delivers nothing.
type discardBus struct{}

func (discardBus) Send(uuid.UUID, bus.Kind, []byte) error { return nil }
func (discardBus) Start(bus.Receiver) error               { return nil }
func (discardBus) State() bus.State                       { return bus.StateConnected }
func (discardBus) Stats() bus.Stats                       { return bus.Stats{} }
func (discardBus) Close() error                           { return nil }

// BenchmarkBridgeSendMsgApp measures Bridge.Send end to end on the raft
// loop's side (grouping, resolving, measuring, one exact-size allocation
// and marshalling per envelope) for a Ready with one MsgApp of 64 x 128 B
// to each of two followers.
func BenchmarkBridgeSendMsgApp(b *testing.B) {
	dir := NewMemDirectory()
	dir.Set(1, benchHeader.From.Incarnation)
	dir.Set(2, benchHeader.To.Incarnation)
	dir.Set(3, uuid.MustParse("0195a1b2-0000-7000-8000-000000000013"))
	br, err := New(Config{
		Cluster: benchHeader.Cluster, ID: 1, Incarnation: benchHeader.From.Incarnation,
		Bus: discardBus{}, Directory: dir, Raft: nopRaft{},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	msgs := []*raftpb.Message{msgApp(1, 2, 64, 128), msgApp(1, 3, 64, 128)}
	b.ReportAllocs()
	for b.Loop() {
		br.Send(msgs)
	}
}

// BenchmarkDeliver64Heartbeats measures the inbound path for one envelope of
// 64 heartbeats from a member: header and identity checks, body decoding,
// per-message checks and one Process call (with its own deadline) each.
func BenchmarkDeliver64Heartbeats(b *testing.B) {
	dir := NewMemDirectory()
	dir.Set(1, benchHeader.From.Incarnation)
	dir.Set(2, benchHeader.To.Incarnation)
	br, err := New(Config{
		Cluster: benchHeader.Cluster, ID: 2, Incarnation: benchHeader.To.Incarnation,
		Bus: discardBus{}, Directory: dir, Raft: nopRaft{},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	msgs := make([]*raftpb.Message, 64)
	for i := range msgs {
		msgs[i] = heartbeat(1, 2)
	}
	h := wire.Header{Cluster: benchHeader.Cluster, From: wire.Endpoint{ID: 1, Incarnation: benchHeader.From.Incarnation}, To: wire.Endpoint{ID: 2, Incarnation: benchHeader.To.Incarnation}}
	data, err := wire.AppendEnvelope(nil, &h, msgs)
	if err != nil {
		b.Fatal(err)
	}
	d := bus.Delivery{Cluster: h.Cluster, To: h.To.Incarnation, From: h.From.Incarnation, Kind: bus.KindMsg, Data: data}
	b.ReportAllocs()
	for b.Loop() {
		receiver{br}.Deliver(d)
	}
	if got := br.Stats().Received[1].Messages; got == 0 {
		b.Fatal("nothing received")
	}
}
