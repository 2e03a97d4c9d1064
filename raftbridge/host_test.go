package raftbridge

import (
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// receivingBus is a captureBus that keeps its receiver, so a test can
// deliver payloads by hand.
type receivingBus struct {
	captureBus
	r bus.Receiver
}

func (b *receivingBus) Start(r bus.Receiver) error { b.r = r; return nil }

// hostFixture is a host (incarnation self, Raft ID 1 in every group) with
// a bridge in each of groups, where peer (Raft ID 2) is a member.
type hostFixture struct {
	cluster, self, peer uuid.UUID
	bus                 *receivingBus
	host                *Host
	rafts               map[uint64]*recordingRaft
	bridges             map[uint64]*Bridge
}

func newHostFixture(t *testing.T, coalesce bool, groups ...uint64) *hostFixture {
	t.Helper()
	f := &hostFixture{cluster: uuid.New(), self: uuid.New(), peer: uuid.New(), bus: &receivingBus{},
		rafts: map[uint64]*recordingRaft{}, bridges: map[uint64]*Bridge{}}
	interval := -1 * DefaultCoalesceInterval
	if coalesce {
		interval = 1 << 40 // only Flush sends
	}
	h, err := NewHost(HostConfig{Cluster: f.cluster, Incarnation: f.self, Bus: f.bus, CoalesceInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	f.host = h
	for _, g := range groups {
		dir := NewMemDirectory()
		dir.Set(1, f.self)
		dir.Set(2, f.peer)
		f.rafts[g] = newRecordingRaft()
		b, err := h.NewBridge(Config{ID: 1, Group: g, Directory: dir, Raft: f.rafts[g]})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		f.bridges[g] = b
		t.Cleanup(func() { _ = b.Close() })
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return f
}

// fromPeer is an envelope of group from the peer to this host.
func (f *hostFixture) fromPeer(t *testing.T, group uint64, msgs ...*raftpb.Message) []byte {
	t.Helper()
	h := wire.Header{Cluster: f.cluster, Group: group, From: wire.Endpoint{ID: 2, Incarnation: f.peer}, To: wire.Endpoint{ID: 1, Incarnation: f.self}}
	b, err := wire.AppendEnvelope(nil, &h, msgs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *hostFixture) deliver(data []byte) {
	f.bus.r.Deliver(bus.Delivery{Cluster: f.cluster, To: f.self, From: f.peer, Kind: bus.KindMsg, Data: data})
}

func heartbeatMsg(from, to, term uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(term)}
}

func TestHostRoutesEveryGroupAndDropsTheRest(t *testing.T) {
	f := newHostFixture(t, false, 0, 1, 7)
	f.deliver(f.fromPeer(t, 0, heartbeatMsg(2, 1, 1)))
	f.deliver(f.fromPeer(t, 7, heartbeatMsg(2, 1, 2)))
	batch, err := wire.AppendBatch(nil, [][]byte{f.fromPeer(t, 1, heartbeatMsg(2, 1, 3)), f.fromPeer(t, 7, heartbeatMsg(2, 1, 4))})
	if err != nil {
		t.Fatal(err)
	}
	f.deliver(batch)
	for g, want := range map[uint64]int{0: 1, 1: 1, 7: 2} {
		if got := f.rafts[g].processedCount(); got != want {
			t.Fatalf("group %d processed %d messages, want %d", g, got, want)
		}
	}
	// A group this host does not hold, garbage, and a batch in a batch.
	f.deliver(f.fromPeer(t, 3, heartbeatMsg(2, 1, 5)))
	f.deliver([]byte("RB\x02\x09garbage"))
	nested, _ := wire.AppendBatch(nil, [][]byte{batch})
	f.deliver(nested)
	st := f.host.Stats()
	if st.Dropped[DropUnknownGroup] != 1 || st.Dropped[DropDecode] != 2 {
		t.Fatalf("host drops %v, want 1 unknown_group and 2 decode", st.Dropped)
	}
	for g, want := range map[uint64]int{0: 1, 1: 1, 7: 2} {
		if got := f.rafts[g].processedCount(); got != want {
			t.Fatalf("group %d processed %d messages after the bad payloads, want %d", g, got, want)
		}
	}
	// A closed group's traffic is another unknown group's.
	_ = f.bridges[1].Close()
	f.deliver(f.fromPeer(t, 1, heartbeatMsg(2, 1, 6)))
	if got := f.host.Stats().Dropped[DropUnknownGroup]; got != 2 {
		t.Fatalf("%d unknown_group drops after group 1 closed, want 2", got)
	}
	if _, err := f.host.NewBridge(Config{ID: 1, Group: 7, Directory: NewMemDirectory(), Raft: nopRaft{}}); err == nil {
		t.Fatal("a second bridge of group 7 on one host")
	}
}

// A bridge of one group drops an envelope of another, whatever delivers it.
func TestBridgeDropsOtherGroupsEnvelopes(t *testing.T) {
	cluster, self, peer := uuid.New(), uuid.New(), uuid.New()
	dir := NewMemDirectory()
	dir.Set(1, self)
	dir.Set(2, peer)
	rb := &receivingBus{}
	r := newRecordingRaft()
	b, err := New(Config{Cluster: cluster, ID: 1, Incarnation: self, Group: 4, Bus: rb, Directory: dir, Raft: r})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, g := range []uint64{0, 5} {
		h := wire.Header{Cluster: cluster, Group: g, From: wire.Endpoint{ID: 2, Incarnation: peer}, To: wire.Endpoint{ID: 1, Incarnation: self}}
		env, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{poison(2, 1)})
		if err != nil {
			t.Fatal(err)
		}
		rb.r.Deliver(bus.Delivery{Cluster: cluster, To: self, From: peer, Kind: bus.KindMsg, Data: env})
	}
	if got := r.processedCount(); got != 0 {
		t.Fatalf("%d messages of other groups reached raft", got)
	}
	if got := b.Stats().DroppedMessages[DropGroupMismatch]; got != 2 {
		t.Fatalf("%d group_mismatch drops, want 2", got)
	}
}

// Plain heartbeats of several groups to one host wait and leave in one
// batch; a heartbeat with a read context and an append leave at once.
func TestHostCoalescesPlainHeartbeats(t *testing.T) {
	f := newHostFixture(t, true, 1, 2, 3)
	for g, b := range f.bridges {
		b.Send([]*raftpb.Message{heartbeatMsg(1, 2, g)})
	}
	withCtx := heartbeatMsg(1, 2, 9)
	withCtx.Context = []byte("read-req")
	f.bridges[1].Send([]*raftpb.Message{withCtx})
	f.bridges[2].Send([]*raftpb.Message{{Type: raftpb.MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(1)}})
	if got := len(f.bus.payloads()); got != 2 {
		t.Fatalf("%d payloads before the flush, want 2 (the read heartbeat and the append)", got)
	}
	f.host.Flush()
	ps := f.bus.payloads()
	if len(ps) != 3 {
		t.Fatalf("%d payloads after the flush, want 3", len(ps))
	}
	envs, err := wire.DecodeBatch(ps[2].data)
	if err != nil || len(envs) != 3 || ps[2].to != f.peer {
		t.Fatalf("flushed payload to %s: %d envelopes, %v; want one batch of 3 to the peer", ps[2].to, len(envs), err)
	}
	seen := map[uint64]bool{}
	for _, e := range envs {
		h, _, err := wire.DecodeHeader(e)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Group] = true
	}
	if len(seen) != 3 {
		t.Fatalf("batch holds groups %v, want 1, 2 and 3", seen)
	}
	if st := f.host.Stats(); st.CoalescedEnvelopes != 3 || st.CoalescedFrames != 1 {
		t.Fatalf("coalesced %d envelopes into %d frames, want 3 into 1", st.CoalescedEnvelopes, st.CoalescedFrames)
	}
}

// Liveness is recorded only for tracked peers, from any payload of theirs.
func TestHostLivenessOnlyForTrackedPeers(t *testing.T) {
	f := newHostFixture(t, false, 0)
	f.deliver(wire.AppendHostPing(nil, f.cluster))
	if _, ok := f.host.LastHeard(f.peer); ok {
		t.Fatal("an untracked peer's liveness was recorded")
	}
	f.host.Track([]uuid.UUID{f.peer})
	f.deliver(wire.AppendHostPing(nil, f.cluster))
	if _, ok := f.host.LastHeard(f.peer); !ok {
		t.Fatal("a tracked peer's ping was not recorded")
	}
	if st := f.host.Stats(); st.PingsReceived != 2 {
		t.Fatalf("%d pings received, want 2", st.PingsReceived)
	}
	f.host.Ping()
	if ps := f.bus.payloads(); len(ps) != 1 || ps[0].to != f.peer {
		t.Fatalf("Ping sent %d payloads, want one to the tracked peer", len(ps))
	}
}
