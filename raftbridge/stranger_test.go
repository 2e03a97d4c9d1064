package raftbridge

import (
	"bytes"
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// directBridge is a bridge driven by calling deliver directly, with node 1
// as itself and 2 and 3 as members.
type directBridge struct {
	b               *Bridge
	cluster         uuid.UUID
	me, peer, other uuid.UUID
	dir             *MemDirectory
	bus             *captureBus
	reg             *prometheus.Registry
}

func newDirectBridge(t testing.TB, r Raft, tweak func(*Config)) *directBridge {
	t.Helper()
	d := &directBridge{
		cluster: uuid.Must(uuid.NewV7()), me: uuid.Must(uuid.NewV7()),
		peer: uuid.Must(uuid.NewV7()), other: uuid.Must(uuid.NewV7()),
		dir: NewMemDirectory(), bus: &captureBus{}, reg: prometheus.NewRegistry(),
	}
	d.dir.Set(1, d.me)
	d.dir.Set(2, d.peer)
	d.dir.Set(3, d.other)
	cfg := Config{Cluster: d.cluster, ID: 1, Incarnation: d.me, Bus: d.bus, Directory: d.dir, Raft: r, Registerer: d.reg}
	if tweak != nil {
		tweak(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	d.b = b
	return d
}

// fromPeer delivers msgs in one envelope from member 2.
func (d *directBridge) fromPeer(t testing.TB, msgs ...*raftpb.Message) {
	t.Helper()
	receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: d.peer, Kind: bus.KindMsg,
		Data: envelope(t, d.cluster, wire.Endpoint{ID: 2, Incarnation: d.peer}, wire.Endpoint{ID: 1, Incarnation: d.me}, msgs...)})
}

func readIndex(from, to uint64, rctx string) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MsgReadIndex.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Entries: []*raftpb.Entry{{Data: []byte(rctx)}}}
}

// Issue 8 item 6: raft forwards a MsgReadIndex (and a MsgProp) to its
// leader keeping the original requester's From. Such a message from
// another current member must pass, and a message that does not agree with
// its envelope must cost only itself, never its neighbours.
func TestForwardedReadIndexAndPerMessageDrops(t *testing.T) {
	r := newRecordingRaft()
	d := newDirectBridge(t, r, nil)
	d.dir.Set(9, uuid.Must(uuid.NewV7()))
	d.dir.Remove(9)
	prop := &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(3), To: proto.Uint64(1),
		Entries: []*raftpb.Entry{{Data: []byte("x")}}}
	good := []*raftpb.Message{
		heartbeat(2, 1),
		readIndex(3, 1, "forwarded for 3"), // member 3's request, forwarded by 2
		msgApp(2, 1, 4, 16),
		prop,                                  // member 3's proposal, forwarded by 2
		readIndex(1, 1, "my own, back to me"), // this node's request, forwarded back
	}
	bad := []*raftpb.Message{
		readIndex(9, 1, "tombstoned requester"),
		readIndex(77, 1, "unknown requester"),
		heartbeat(3, 1), // only forwarded types may name another member
		heartbeat(2, 5), // not for this node
		{Type: raftpb.MsgHup.Enum(), From: proto.Uint64(2), To: proto.Uint64(1)},
		msgSnap(2, 1, []byte("outside the snapshot protocol")),
	}
	// Interleave: every bad message sits between good ones.
	var msgs []*raftpb.Message
	for i := range max(len(good), len(bad)) {
		if i < len(good) {
			msgs = append(msgs, good[i])
		}
		if i < len(bad) {
			msgs = append(msgs, bad[i])
		}
	}
	d.fromPeer(t, msgs...)

	got := r.processedMessages()
	if len(got) != len(good) {
		t.Fatalf("raft stepped %d messages, want the %d good ones (drops: %v)", len(got), len(good), d.b.Stats().Dropped)
	}
	for i := range good {
		if !proto.Equal(got[i], good[i]) {
			t.Errorf("message %d: stepped %v, want %v", i, got[i], good[i])
		}
	}
	st := d.b.Stats()
	if n := st.Dropped[DropMessageMismatch]; n != uint64(len(bad)) {
		t.Errorf("message_mismatch drops %d, want %d (one per bad message)", n, len(bad))
	}
	if st.Received[2].Messages != uint64(len(good)) {
		t.Errorf("received from 2: %+v, want %d messages", st.Received[2], len(good))
	}
}

// The leader answers a forwarded MsgReadIndex To the original requester;
// Send routes that answer to the requester's incarnation like any other
// message.
func TestReadIndexRespGoesToTheRequester(t *testing.T) {
	d := newDirectBridge(t, newRecordingRaft(), nil)
	resp := &raftpb.Message{Type: raftpb.MsgReadIndexResp.Enum(), From: proto.Uint64(1), To: proto.Uint64(3),
		Term: proto.Uint64(7), Index: proto.Uint64(42), Entries: []*raftpb.Entry{{Data: []byte("forwarded for 3")}}}
	d.b.Send([]*raftpb.Message{resp})
	ps := d.bus.payloads()
	if len(ps) != 1 || ps[0].to != d.other || ps[0].kind != bus.KindMsg {
		t.Fatalf("sent %+v, want one message envelope to member 3's incarnation", ps)
	}
	env, err := wire.DecodeEnvelope(ps[0].data)
	if err != nil {
		t.Fatal(err)
	}
	if env.To != (wire.Endpoint{ID: 3, Incarnation: d.other}) || len(env.Messages) != 1 || !proto.Equal(env.Messages[0], resp) {
		t.Fatalf("envelope %+v", env)
	}
}

// stallRaft's Process does not return for the first message until its
// context is done (a stalled raft loop), then accepts every message whose
// context is still live.
type stallRaft struct {
	*recordingRaft
	once sync.Once
}

func (s *stallRaft) Process(ctx context.Context, m *raftpb.Message) error {
	stalled := false
	s.once.Do(func() {
		<-ctx.Done()
		stalled = true
	})
	if stalled || ctx.Err() != nil {
		return ctx.Err()
	}
	return s.recordingRaft.Process(ctx, m)
}

// Issue 8 item 6: the timeout covers each message, not the envelope, so a
// stall costs only the message being stepped and not the envelope's tail.
func TestProcessTimeoutPerMessage(t *testing.T) {
	r := &stallRaft{recordingRaft: newRecordingRaft()}
	d := newDirectBridge(t, r, func(c *Config) { c.ProcessTimeout = 50 * time.Millisecond })
	const n = 100
	msgs := make([]*raftpb.Message, n)
	for i := range msgs {
		msgs[i] = heartbeat(2, 1)
	}
	d.fromPeer(t, msgs...)
	st := d.b.Stats()
	if got := st.Dropped[DropProcessFailed]; got != 1 {
		t.Errorf("process_failed drops %d, want 1 (the stalled message only)", got)
	}
	if got := r.processedCount(); got != n-1 {
		t.Errorf("raft took %d messages after the stall, want %d", got, n-1)
	}
}

// Issue 9: a delivery from an incarnation that is not in the directory is
// dropped as unknown_sender, whatever it carries: messages, snapshot
// chunks, acks. It never reaches Raft and gets no answer.
func TestUnknownSenderDropped(t *testing.T) {
	r := newSnapRaft()
	d := newDirectBridge(t, r, nil)
	stranger := uuid.Must(uuid.NewV7())
	from := wire.Endpoint{ID: 4, Incarnation: stranger}
	to := wire.Endpoint{ID: 1, Incarnation: d.me}
	deliver := func(kind bus.Kind, data []byte) {
		receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: stranger, Kind: kind, Data: data})
	}
	deliver(bus.KindMsg, envelope(t, d.cluster, from, to, heartbeat(4, 1), poison(4, 1)))
	meta, err := proto.Marshal(withoutSnapshotData(msgSnap(4, 1, nil)))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("0123456789")
	deliver(bus.KindSnap, appendSnapChunk(nil, &snapChunk{Header: wire.Header{Cluster: d.cluster, From: from, To: to},
		Transfer: 1, Term: 4, Index: 1000, Chunk: 0, Chunks: 1, Size: uint64(len(data)), CRC: crc32Of(data), Meta: meta, Data: data}))
	deliver(bus.KindSnap, appendSnapAck(nil, &snapAck{Header: wire.Header{Cluster: d.cluster, From: from, To: to},
		Transfer: 1, Index: 1000, Status: ackDone, Next: 1}))
	// Header first: a stranger's undecodable body is still a stranger.
	deliver(bus.KindMsg, envelope(t, d.cluster, from, to, heartbeat(4, 1))[:wire.HeaderSize+2])
	st := d.b.Stats()
	if got := st.Dropped[DropUnknownSender]; got != 5 {
		t.Errorf("unknown_sender drops %d, want 5 (2 messages, a chunk, an ack, a broken envelope): %v", got, st.Dropped)
	}
	if got := st.Dropped[DropDecode]; got != 0 {
		t.Errorf("%d decode drops: a stranger's body was decoded", got)
	}
	if n := r.processedCount(); n != 0 {
		t.Errorf("raft stepped %d messages from the stranger", n)
	}
	if n := len(r.received()); n != 0 {
		t.Errorf("the node received %d snapshots from the stranger", n)
	}
	if ps := d.bus.payloads(); len(ps) != 0 {
		t.Errorf("the bridge answered %d times", len(ps))
	}
	// Nor can Raft reach it: the directory alone names destinations.
	d.b.Send([]*raftpb.Message{heartbeat(1, 4)})
	if ps := d.bus.payloads(); len(ps) != 0 {
		t.Errorf("the bridge sent %d payloads to the stranger", len(ps))
	}
}

// A stranger's body is never decoded: dropping even a 4,096-message
// envelope costs a handful of allocations.
func TestUnknownSenderBodyNotDecoded(t *testing.T) {
	d := newDirectBridge(t, newRecordingRaft(), nil)
	stranger := uuid.Must(uuid.NewV7())
	msgs := make([]*raftpb.Message, wire.MaxMessagesPerEnvelope)
	for i := range msgs {
		msgs[i] = heartbeat(4, 1)
	}
	del := bus.Delivery{Cluster: d.cluster, To: d.me, From: stranger, Kind: bus.KindMsg,
		Data: envelope(t, d.cluster, wire.Endpoint{ID: 4, Incarnation: stranger}, wire.Endpoint{ID: 1, Incarnation: d.me}, msgs...)}
	allocs := testing.AllocsPerRun(20, func() { receiver{d.b}.Deliver(del) })
	t.Logf("dropping a stranger's %d-message envelope: %.0f allocations", wire.MaxMessagesPerEnvelope, allocs)
	if allocs > 16 {
		t.Errorf("dropping a stranger's envelope took %.0f allocations", allocs)
	}
	if got := d.b.Stats().Dropped[DropUnknownSender]; got != 21*wire.MaxMessagesPerEnvelope {
		t.Errorf("unknown_sender drops %d, want %d", got, 21*wire.MaxMessagesPerEnvelope)
	}
}

// echoRaft answers every message it steps, to its From, the way raft
// answers heartbeats and votes.
type echoRaft struct {
	*recordingRaft
	b *Bridge
}

func (e *echoRaft) Process(ctx context.Context, m *raftpb.Message) error {
	e.b.Send([]*raftpb.Message{{Type: raftpb.MsgHeartbeatResp.Enum(), From: proto.Uint64(1), To: proto.Uint64(m.GetFrom()), Term: proto.Uint64(7)}})
	return e.recordingRaft.Process(ctx, m)
}

// countSeries counts every time series the registry gathers.
func countSeries(t testing.TB, reg *prometheus.Registry) int {
	t.Helper()
	n := 0
	for _, f := range gathered(t, reg) {
		n += len(f.GetMetric())
	}
	return n
}

// Issue 9: nothing a delivery claims may grow state without bound. 500
// made-up identities (and Raft told to send to 500 made-up IDs) leave the
// metric series, the Stats maps and the bus's destinations as they were.
func TestForgedIdentitiesGrowNothing(t *testing.T) {
	e := &echoRaft{recordingRaft: newRecordingRaft()}
	d := newDirectBridge(t, e, nil)
	e.b = d.b
	d.fromPeer(t, heartbeat(2, 1)) // one legitimate peer, for the baseline
	d.b.Send([]*raftpb.Message{heartbeat(1, 3)})
	base := countSeries(t, d.reg)

	r := rand.New(rand.NewPCG(9, 9))
	for i := range 500 {
		id := 100 + uint64(i)
		inc := randUUID(r)
		receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: inc, Kind: bus.KindMsg,
			Data: envelope(t, d.cluster, wire.Endpoint{ID: id, Incarnation: inc}, wire.Endpoint{ID: 1, Incarnation: d.me}, heartbeat(id, 1))})
		d.b.Send([]*raftpb.Message{heartbeat(1, 10_000+uint64(i))})
	}
	waitFor(t, testWait, "the unreachable reports", func() bool {
		return e.unreachableCount(10_000+499) > 0
	})
	got := countSeries(t, d.reg)
	t.Logf("metric series: %d before, %d after 500 forged identities", base, got)
	if got > base+4 {
		t.Errorf("%d metric series after 500 forged identities, %d before", got, base)
	}
	st := d.b.Stats()
	for name, n := range map[string]int{"Received": len(st.Received), "Unreachable": len(st.Unreachable), "Sent": len(st.Sent)} {
		if n > 3 {
			t.Errorf("Stats.%s has %d keys", name, n)
		}
	}
	for _, p := range d.bus.payloads() {
		if p.to != d.peer && p.to != d.other {
			t.Fatalf("a payload went to %s, not a member", p.to)
		}
	}
}

// Issue 9: a forged chunk 0 claiming a gigabyte must not make the receiver
// allocate one. Buffers grow with the data that arrives.
func TestSnapshotReceiverDoesNotReserveClaimedSize(t *testing.T) {
	r := newSnapRaft()
	d := newDirectBridge(t, r, nil)
	meta, err := proto.Marshal(withoutSnapshotData(msgSnap(2, 1, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const claimed = 1 << 30 // DefaultMaxSnapshotBytes: within the bound
	chunk := appendSnapChunk(nil, &snapChunk{
		Header:   wire.Header{Cluster: d.cluster, From: wire.Endpoint{ID: 2, Incarnation: d.peer}, To: wire.Endpoint{ID: 1, Incarnation: d.me}},
		Transfer: 1, Term: 4, Index: 1000, Chunk: 0, Chunks: 1 << 20, Size: claimed, CRC: 1, Meta: meta,
		Data: bytes.Repeat([]byte{7}, 100),
	})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: d.peer, Kind: bus.KindSnap, Data: chunk})
	waitFor(t, testWait, "the progress ack", func() bool { return len(d.bus.acks(t)) == 1 })
	runtime.ReadMemStats(&after)
	if a := d.bus.acks(t)[0]; a.Status != ackProgress || a.Next != 1 {
		t.Fatalf("ack %+v, want progress at 1", a)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("a chunk 0 claiming %d bytes: %d bytes allocated in all while taking it", uint64(claimed), grew)
	if grew > 16<<20 {
		t.Errorf("taking a 100-byte chunk 0 that claims %d bytes allocated %d bytes", claimed, grew)
	}
}

// The receiver's buffers are bounded by MaxSnapshotBytes over every
// transfer in progress, counted from what arrived; a transfer that would
// take them beyond fails with a failed ack, and a new transfer from the
// same sender replaces the old one.
func TestSnapshotReceiverBoundsBufferedBytes(t *testing.T) {
	r := newSnapRaft()
	d := newDirectBridge(t, r, func(c *Config) { c.MaxSnapshotBytes = 64 << 10 })
	meta := func(from uint64) []byte {
		b, err := proto.Marshal(withoutSnapshotData(msgSnap(from, 1, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	send := func(from uint64, inc uuid.UUID, transfer uint64, n uint32, part []byte) {
		c := snapChunk{Header: wire.Header{Cluster: d.cluster, From: wire.Endpoint{ID: from, Incarnation: inc}, To: wire.Endpoint{ID: 1, Incarnation: d.me}},
			Transfer: transfer, Term: 4, Index: 1000, Chunk: n, Chunks: 4, Size: 64 << 10, CRC: 1, Data: part}
		if n == 0 {
			c.Meta = meta(from)
		}
		receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: inc, Kind: bus.KindSnap, Data: appendSnapChunk(nil, &c)})
	}
	part := bytes.Repeat([]byte{1}, 16<<10)
	lastAck := func(n int) *snapAck {
		t.Helper()
		waitFor(t, testWait, "an ack", func() bool { return len(d.bus.acks(t)) >= n })
		return d.bus.acks(t)[n-1]
	}
	// Member 2 fills 32 KiB of buffer (16 KiB, then doubled to 32 KiB).
	send(2, d.peer, 1, 0, part)
	send(2, d.peer, 1, 1, part)
	if a := lastAck(2); a.Status != ackProgress || a.Next != 2 {
		t.Fatalf("ack %+v", a)
	}
	// Member 3 gets 16 KiB, then 32 KiB (64 KiB buffered in all), but its
	// third chunk would double its buffer to 64 KiB: 96 KiB in all.
	send(3, d.other, 7, 0, part)
	send(3, d.other, 7, 1, part)
	send(3, d.other, 7, 2, part)
	if a := lastAck(5); a.Status != ackFailed || a.To.ID != 3 {
		t.Fatalf("ack %+v, want failed to 3", a)
	}
	// Member 2 starts over: its old buffer is released, and the new one
	// fits.
	send(2, d.peer, 2, 0, part)
	if a := lastAck(6); a.Status != ackProgress || a.Transfer != 2 {
		t.Fatalf("ack %+v", a)
	}
}
