package raftbridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/internal/wire"
)

// snapRaft is a recordingRaft that takes snapshots through
// SnapshotReceiver, optionally failing or holding them.
type snapRaft struct {
	*recordingRaft
	smu      sync.Mutex
	snaps    []*raftpb.Message
	err      error
	hold     chan struct{} // if set, ReceiveSnapshot waits for it to close
	entered  chan struct{} // closed when ReceiveSnapshot is first entered
	enterOne sync.Once
}

func newSnapRaft() *snapRaft {
	return &snapRaft{recordingRaft: newRecordingRaft(), entered: make(chan struct{})}
}

func (s *snapRaft) ReceiveSnapshot(ctx context.Context, m *raftpb.Message) error {
	s.enterOne.Do(func() { close(s.entered) })
	s.smu.Lock()
	hold, err := s.hold, s.err
	s.smu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	s.snaps = append(s.snaps, m)
	return err
}

func (s *snapRaft) received() []*raftpb.Message {
	s.smu.Lock()
	defer s.smu.Unlock()
	return append([]*raftpb.Message(nil), s.snaps...)
}

// bridgePair is a sender (ID 1) and a receiver (ID 2) on one network.
type bridgePair struct {
	net              *membus.Network
	cluster          uuid.UUID
	incA, incB       uuid.UUID
	dirA, dirB       *MemDirectory
	busA, busB       *recordingBus
	raftA            *recordingRaft
	raftB            *snapRaft
	a, b             *Bridge
	mbusA, mbusB     *membus.Bus
	statusesSeenByID map[uint64]int
}

func newBridgePair(t *testing.T, seed int64, tune func(*Config)) *bridgePair {
	t.Helper()
	p := &bridgePair{
		net: membus.NewNetwork(seed), cluster: uuid.Must(uuid.NewV7()),
		incA: uuid.Must(uuid.NewV7()), incB: uuid.Must(uuid.NewV7()),
		dirA: NewMemDirectory(), dirB: NewMemDirectory(),
		raftA: newRecordingRaft(), raftB: newSnapRaft(),
	}
	t.Cleanup(p.net.Close)
	for _, d := range []*MemDirectory{p.dirA, p.dirB} {
		d.Set(1, p.incA)
		d.Set(2, p.incB)
	}
	var err error
	if p.mbusA, err = p.net.NewBus(membus.Config{Cluster: p.cluster, Self: p.incA}); err != nil {
		t.Fatal(err)
	}
	if p.mbusB, err = p.net.NewBus(membus.Config{Cluster: p.cluster, Self: p.incB}); err != nil {
		t.Fatal(err)
	}
	p.busA, p.busB = newRecordingBus(p.mbusA), newRecordingBus(p.mbusB)
	mk := func(id uint64, inc uuid.UUID, b bus.Bus, d Directory, r Raft) *Bridge {
		cfg := Config{
			Cluster: p.cluster, ID: id, Incarnation: inc, Bus: b, Directory: d, Raft: r,
			Logger:          testLogger().With("node", id),
			SnapshotTimeout: 3 * time.Second, SnapshotResendInterval: 100 * time.Millisecond,
			SnapshotRetryBackoff: 20 * time.Millisecond,
		}
		if tune != nil {
			tune(&cfg)
		}
		br, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { br.Close() })
		if err := br.Start(); err != nil {
			t.Fatal(err)
		}
		return br
	}
	p.a = mk(1, p.incA, p.busA, p.dirA, p.raftA)
	p.b = mk(2, p.incB, p.busB, p.dirB, p.raftB)
	return p
}

// snapshotBytes returns n bytes that are not a repetition the checksum
// could miss: a random 1 MiB block, each copy stamped with its offset.
func snapshotBytes(t testing.TB, n int) []byte {
	t.Helper()
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, block[:min(len(block), n-len(out))]...)
		if len(out) >= 8 {
			binary.BigEndian.PutUint64(out[len(out)-8:], uint64(len(out)))
		}
	}
	return out
}

func msgSnap(from, to uint64, data []byte) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(5),
		Snapshot: &raftpb.Snapshot{
			Data: data,
			Metadata: &raftpb.SnapshotMetadata{
				Index: proto.Uint64(1000), Term: proto.Uint64(4),
				ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
			},
		},
	}
}

// sendSnapshot hands m to the sender and waits for the report Raft gets.
func (p *bridgePair) sendSnapshot(t *testing.T, m *raftpb.Message) raft.SnapshotStatus {
	t.Helper()
	before := len(p.raftA.snapshotStatuses(2))
	p.a.Send([]*raftpb.Message{m})
	var st raft.SnapshotStatus
	waitFor(t, testWait, "a snapshot report", func() bool {
		s := p.raftA.snapshotStatuses(2)
		if len(s) > before {
			st = s[len(s)-1]
			return true
		}
		return false
	})
	return st
}

// makeLossy makes the network drop 5%, duplicate 5% and reorder 20% of
// the frames.
func (p *bridgePair) makeLossy() {
	p.net.SetDropRate(0.05)
	p.net.SetDuplicateRate(0.05)
	p.net.SetReorderRate(0.20)
}

// sendUntilFinished sends m until a transfer finishes, as Raft retries a
// failed snapshot. Each attempt must end cleanly with a report, and one of
// the first five must succeed.
func (p *bridgePair) sendUntilFinished(t *testing.T, m *raftpb.Message) {
	t.Helper()
	var statuses []raft.SnapshotStatus
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatalf("no success in %d attempts: %v", attempt, statuses)
		}
		st := p.sendSnapshot(t, m)
		statuses = append(statuses, st)
		if st == raft.SnapshotFinish {
			return
		}
	}
}

func checkSnapshot(t *testing.T, got, want *raftpb.Message) {
	t.Helper()
	if !bytes.Equal(got.GetSnapshot().GetData(), want.GetSnapshot().GetData()) {
		t.Fatalf("snapshot data differs (%d bytes, want %d)", len(got.GetSnapshot().GetData()), len(want.GetSnapshot().GetData()))
	}
	if !proto.Equal(withoutSnapshotData(got), withoutSnapshotData(want)) {
		t.Fatalf("snapshot message %v, want %v", withoutSnapshotData(got), withoutSnapshotData(want))
	}
}

func TestSnapshot50MiBOverLossyNetwork(t *testing.T) {
	p := newBridgePair(t, 8, nil)
	p.makeLossy()
	m := msgSnap(1, 2, snapshotBytes(t, 50<<20))
	p.sendUntilFinished(t, m)
	got := p.raftB.received()
	if len(got) != 1 {
		t.Fatalf("node received %d snapshots, want 1", len(got))
	}
	checkSnapshot(t, got[0], m)
	if n := p.a.Stats().SnapshotsSent[SnapshotSuccess]; n != 1 {
		t.Errorf("sender counted %d successes", n)
	}
	if n := p.b.Stats().SnapshotsReceived[SnapshotSuccess]; n != 1 {
		t.Errorf("receiver counted %d successes", n)
	}
	if p.mbusA.Stats().Dropped[bus.DropPartitioned] == 0 {
		t.Error("the network dropped no chunk; the test proves nothing")
	}
	if n := p.raftB.processedCount(); n != 0 {
		t.Errorf("the snapshot went through Process %d times despite SnapshotReceiver", n)
	}
}

func TestSnapshotFinishOnlyAfterTheNodeTookIt(t *testing.T) {
	p := newBridgePair(t, 9, nil)
	hold := make(chan struct{})
	p.raftB.smu.Lock()
	p.raftB.hold = hold
	p.raftB.smu.Unlock()
	m := msgSnap(1, 2, snapshotBytes(t, 3<<20))
	p.a.Send([]*raftpb.Message{m})
	<-p.raftB.entered
	// Every chunk is in and the node is persisting: no report yet.
	if st := p.raftA.snapshotStatuses(2); len(st) != 0 {
		t.Fatalf("reported %v before the node returned", st)
	}
	close(hold)
	waitFor(t, testWait, "SnapshotFinish", func() bool {
		st := p.raftA.snapshotStatuses(2)
		return len(st) == 1 && st[0] == raft.SnapshotFinish
	})
	checkSnapshot(t, p.raftB.received()[0], m)
}

func TestSnapshotNodeErrorFails(t *testing.T) {
	p := newBridgePair(t, 10, nil)
	p.raftB.smu.Lock()
	p.raftB.err = errors.New("disk full")
	p.raftB.smu.Unlock()
	if st := p.sendSnapshot(t, msgSnap(1, 2, snapshotBytes(t, 100<<10))); st != raft.SnapshotFailure {
		t.Fatalf("status %v, want failure", st)
	}
	if n := p.b.Stats().SnapshotsReceived[SnapshotFailed]; n != 1 {
		t.Errorf("receiver counted %d failures", n)
	}
	if n := p.raftA.unreachableCount(2); n == 0 {
		t.Error("a failed snapshot did not report the peer unreachable")
	}
}

func TestSnapshotChecksumCorruptionDetected(t *testing.T) {
	p := newBridgePair(t, 11, func(c *Config) { c.MaxEnvelopeBytes = 64 << 10 })
	corrupted := corruptChunkOnce(p.busA, 1)
	m := msgSnap(1, 2, snapshotBytes(t, 300<<10))
	if st := p.sendSnapshot(t, m); st != raft.SnapshotFailure {
		t.Fatalf("status %v, want failure", st)
	}
	if !corrupted.Load() {
		t.Fatal("nothing was corrupted")
	}
	if n := len(p.raftB.received()); n != 0 {
		t.Fatalf("a corrupt snapshot reached the node")
	}
	if n := p.b.Stats().SnapshotsReceived[SnapshotFailed]; n != 1 {
		t.Errorf("receiver counted %d failures", n)
	}
	// Raft retries; the retry is clean.
	if st := p.sendSnapshot(t, m); st != raft.SnapshotFinish {
		t.Fatalf("retry status %v, want finish", st)
	}
	checkSnapshot(t, p.raftB.received()[0], m)
}

func TestSnapshotTooLargeRefused(t *testing.T) {
	p := newBridgePair(t, 12, func(c *Config) { c.MaxSnapshotBytes = 1 << 20 })
	if st := p.sendSnapshot(t, msgSnap(1, 2, snapshotBytes(t, 2<<20))); st != raft.SnapshotFailure {
		t.Fatalf("status %v, want failure", st)
	}
	if n := len(p.raftB.received()); n != 0 {
		t.Fatal("an oversized snapshot reached the node")
	}
}

func TestSnapshotAbandonedWhenIncarnationChanges(t *testing.T) {
	p := newBridgePair(t, 13, func(c *Config) { c.MaxEnvelopeBytes = 64 << 10 })
	// Let the first two chunks through and lose the rest, so that the
	// receiver holds a partial transfer when the identities change.
	var chunks atomic.Int32
	p.busA.setHook(func(_ uuid.UUID, kind bus.Kind, data []byte) []byte {
		if kind == bus.KindSnap && chunks.Add(1) > 2 {
			return nil
		}
		return data
	})
	p.a.Send([]*raftpb.Message{msgSnap(1, 2, snapshotBytes(t, 1<<20))})
	waitFor(t, testWait, "the receiver to accept chunks", func() bool {
		return p.b.Stats().Received[1].Bytes >= 2*(60<<10)
	})
	// The destination is replaced: the sender abandons and tells Raft.
	p.dirA.Set(2, uuid.Must(uuid.NewV7()))
	waitFor(t, testWait, "SnapshotFailure", func() bool {
		return len(p.raftA.snapshotStatuses(2)) == 1
	})
	if st := p.raftA.snapshotStatuses(2)[0]; st != raft.SnapshotFailure {
		t.Fatalf("status %v, want failure", st)
	}
	if n := p.a.Stats().SnapshotsSent[SnapshotAbandoned]; n != 1 {
		t.Errorf("sender counted %d abandoned transfers", n)
	}
	// The source is replaced: the receiver drops the partial transfer.
	p.dirB.Set(1, uuid.Must(uuid.NewV7()))
	waitFor(t, testWait, "the receiver to abandon", func() bool {
		return p.b.Stats().SnapshotsReceived[SnapshotAbandoned] == 1
	})
	if n := len(p.raftB.received()); n != 0 {
		t.Fatal("a partial snapshot reached the node")
	}
}

func TestSnapshotTimeoutWithBackoff(t *testing.T) {
	p := newBridgePair(t, 14, func(c *Config) {
		c.SnapshotTimeout, c.SnapshotResendInterval, c.SnapshotRetryBackoff = 300*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond
	})
	p.net.Isolate(p.incB) // a dead follower
	m := msgSnap(1, 2, snapshotBytes(t, 10<<10))
	if st := p.sendSnapshot(t, m); st != raft.SnapshotFailure {
		t.Fatalf("status %v, want failure", st)
	}
	if n := p.a.Stats().SnapshotsSent[SnapshotTimeout]; n != 1 {
		t.Errorf("sender counted %d timeouts", n)
	}
	// The retry waits out the backoff, then succeeds once the peer is back.
	p.net.Heal()
	if st := p.sendSnapshot(t, m); st != raft.SnapshotFinish {
		t.Fatalf("retry status %v, want finish", st)
	}
}

// A follower cut off while the leader compacts its log can only catch up
// by snapshot; it must, over the bus.
func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 15, bridge: func(cfg *Config) { cfg.MaxEnvelopeBytes = MinEnvelopeBytes }})
	c.propose(values("a", 20))
	lead := c.leader()
	var lag *testNode
	for _, tn := range c.all() {
		if tn != lead {
			lag = tn
			break
		}
	}
	c.net.Isolate(lag.inc)
	var up []*testNode
	for _, tn := range c.all() {
		if tn != lag {
			up = append(up, tn)
		}
	}
	c.propose(values("b", 300), up...)
	for _, tn := range up {
		if err := tn.compact(); err != nil {
			t.Fatal(err)
		}
	}
	c.net.Heal()
	c.propose(values("c", 20))
	c.assertSameLog()
	var sent, received uint64
	for _, tn := range c.all() {
		sent += tn.bridge.Stats().SnapshotsSent[SnapshotSuccess]
		received += tn.bridge.Stats().SnapshotsReceived[SnapshotSuccess]
	}
	if sent == 0 || received == 0 {
		t.Fatalf("no snapshot went over the bus (sent %d, received %d)", sent, received)
	}
}

// TestSnapshotReceiverRefusesBadChunks feeds a receiver chunks from a
// validated sender that lie in various ways: none may reach the node or
// crash the bridge, and each earns the documented ack.
func TestSnapshotReceiverRefusesBadChunks(t *testing.T) {
	cluster, me, peer := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	dir := NewMemDirectory()
	dir.Set(1, peer)
	dir.Set(2, me)
	cb := &captureBus{}
	r := newSnapRaft()
	b, err := New(Config{Cluster: cluster, ID: 2, Incarnation: me, Bus: cb, Directory: dir, Raft: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	data := []byte("0123456789")
	crc := crc32Of(data)
	term, index := uint64(4), uint64(1000)
	chunk := func(transfer uint64, n uint32, meta *raftpb.Message, part []byte, crc uint32) {
		c := snapChunk{
			Header:   wire.Header{Cluster: cluster, From: wire.Endpoint{ID: 1, Incarnation: peer}, To: wire.Endpoint{ID: 2, Incarnation: me}},
			Transfer: transfer, Term: term, Index: index, Chunk: n, Chunks: 2, Size: uint64(len(data)), CRC: crc, Data: part,
		}
		if meta != nil {
			var err error
			if c.Meta, err = proto.Marshal(meta); err != nil {
				t.Fatal(err)
			}
		}
		receiver{b}.Deliver(bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindSnap, Data: appendSnapChunk(nil, &c)})
	}
	lastAck := func(n int) *snapAck {
		t.Helper()
		waitFor(t, testWait, "an ack", func() bool { return len(cb.acks(t)) >= n })
		acks := cb.acks(t)
		if len(acks) != n {
			t.Fatalf("%d acks, want %d", len(acks), n)
		}
		return acks[n-1]
	}
	good := msgSnap(1, 2, nil)
	good.Snapshot.Data = nil

	// Lies in chunk 0's metadata are drops: no answer at all. The receiver
	// handles chunks in order, so the gap ack that follows proves that
	// none of them was answered.
	noSnapshot := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(2)}
	chunk(1, 0, noSnapshot, data[:5], crc)
	term, index = 0, 0 // would match the missing metadata's zero values
	chunk(5, 0, noSnapshot, data[:5], crc)
	term, index = 4, 1000
	chunk(2, 0, msgSnap(3, 2, nil), data[:5], crc)
	chunk(3, 1, nil, data[5:], crc)
	if a := lastAck(1); a.Status != ackGap || a.Next != 0 || a.Transfer != 3 {
		t.Fatalf("chunk 1 first: ack %+v, want gap at 0", a)
	}
	chunk(3, 0, good, data[:5], crc)
	if a := lastAck(2); a.Status != ackProgress || a.Next != 1 {
		t.Fatalf("chunk 0: ack %+v", a)
	}
	chunk(3, 0, good, data[:5], crc)
	if a := lastAck(3); a.Status != ackProgress || a.Next != 1 {
		t.Fatalf("duplicate chunk 0: ack %+v", a)
	}
	// A chunk contradicting chunk 0 is dropped with its transfer; the
	// next chunk is then told to start over.
	chunk(3, 1, nil, data[5:], crc+1)
	chunk(3, 1, nil, data[5:], crc)
	if a := lastAck(4); a.Status != ackGap || a.Next != 0 {
		t.Fatalf("chunk after a dropped transfer: ack %+v, want gap at 0", a)
	}
	if n := len(r.received()); n != 0 {
		t.Fatalf("%d bad snapshots reached the node", n)
	}
	if n := b.Stats().Dropped[DropMessageMismatch]; n != 4 {
		t.Errorf("message_mismatch drops %d, want 4", n)
	}
	// Acks only ever went to the validated sender.
	for _, p := range cb.payloads() {
		if p.to != peer || p.kind != bus.KindSnap {
			t.Fatalf("payload to %s kind %s", p.to, p.kind)
		}
	}
	// A clean transfer still works.
	chunk(4, 0, good, data[:5], crc)
	chunk(4, 1, nil, data[5:], crc)
	waitFor(t, testWait, "the done ack", func() bool {
		acks := cb.acks(t)
		return acks[len(acks)-1].Status == ackDone
	})
	if got := r.received(); len(got) != 1 || !bytes.Equal(got[0].GetSnapshot().GetData(), data) {
		t.Fatalf("node received %v", got)
	}
}

func crc32Of(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// corruptChunkOnce flips a bit inside the data of the first snapshot chunk
// number chunk that b sends, and reports whether it has.
func corruptChunkOnce(b *recordingBus, chunk uint32) *atomic.Bool {
	var corrupted atomic.Bool
	b.setHook(func(_ uuid.UUID, kind bus.Kind, data []byte) []byte {
		if kind != bus.KindSnap || corrupted.Load() {
			return data
		}
		h, body, err := wire.DecodeHeader(data)
		if err != nil || h.Kind != wire.EnvelopeSnapChunk {
			return data
		}
		if c, err := decodeSnapChunk(h, body); err == nil && c.Chunk == chunk {
			data[len(data)-1] ^= 0x40
			corrupted.Store(true)
		}
		return data
	})
	return &corrupted
}

// The snapshot window shrinks on loss and grows back with in-order
// progress (snapWindow): a fixed large window made lossy transfers time
// out under load.
func TestSnapshotWindowAdapts(t *testing.T) {
	w := newSnapWindow(16)
	if w.size != 16 {
		t.Fatalf("starts at %d, want 16", w.size)
	}
	w.loss(10)
	w.loss(10)
	w.loss(10)
	if w.size != 4 {
		t.Fatalf("after three losses %d, want the floor 4", w.size)
	}
	w.progress(13)
	if w.size != 4 {
		t.Fatalf("grew to %d before a window of progress", w.size)
	}
	w.progress(14)
	if w.size != 5 {
		t.Fatalf("after a window of progress %d, want 5", w.size)
	}
	for acked := uint32(14); acked < 1000; acked++ {
		w.progress(acked)
	}
	if w.size != 16 {
		t.Fatalf("after long progress %d, want the configured 16", w.size)
	}
	if small := newSnapWindow(2); small.min != 2 {
		t.Fatalf("a configured window of 2 has floor %d", small.min)
	}
}
