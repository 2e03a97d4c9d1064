package raftbridge

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// poison is a heartbeat that would crash raft if it were ever stepped: its
// commit index is far beyond any log (raftLog.commitTo panics, the
// etcd#17081 failure), and its term would depose the current leader.
func poison(from, to uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(1 << 40), Commit: proto.Uint64(1 << 50),
	}
}

func envelope(t testing.TB, cluster uuid.UUID, from, to wire.Endpoint, msgs ...*raftpb.Message) []byte {
	t.Helper()
	b, err := wire.AppendEnvelope(nil, &wire.Header{Cluster: cluster, From: from, To: to}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inject publishes payload on the subject from srcInc to dst, framed as a
// bus would frame it, bypassing the network's faults.
func (c *testCluster) inject(dst *testNode, srcInc uuid.UUID, kind bus.Kind, payload []byte) {
	subj := wire.Subject(testPrefix, c.cluster, dst.inc, srcInc, kind)
	c.net.Inject(subj, wire.AppendFrame(nil, [][]byte{payload}))
}

func TestInboundDropReasons(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 5})
	c.propose(values("before", 10))
	lead := c.leader()
	var target, other *testNode
	for _, tn := range c.all() {
		switch {
		case tn == lead:
		case target == nil:
			target = tn
		default:
			other = tn
		}
	}
	me := wire.Endpoint{ID: target.id, Incarnation: target.inc}
	r := rand.New(rand.NewPCG(5, 5))
	var forged []uuid.UUID // every incarnation invented below
	newInc := func() uuid.UUID {
		u := randUUID(r)
		forged = append(forged, u)
		return u
	}
	// A tombstoned member: ID 9 held by inc9, removed.
	inc9 := newInc()
	target.dir.Set(9, inc9)
	target.dir.Remove(9)

	type tc struct {
		name    string
		reason  bus.DropReason
		count   uint64
		src     uuid.UUID // subject's source token
		kind    bus.Kind
		payload []byte
		frame   []byte // raw frame instead of a framed payload
	}
	var cases []tc
	add := func(name string, reason bus.DropReason, count uint64, src uuid.UUID, payload []byte) {
		cases = append(cases, tc{name: name, reason: reason, count: count, src: src, kind: bus.KindMsg, payload: payload})
	}
	{
		f := newInc()
		add("wrong cluster", DropClusterMismatch, 2, f,
			envelope(t, randUUID(r), wire.Endpoint{ID: other.id, Incarnation: f}, me, poison(other.id, target.id), poison(other.id, target.id)))
	}
	{
		f := newInc()
		add("wrong destination id", DropWrongDestination, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, wire.Endpoint{ID: other.id, Incarnation: target.inc}, poison(77, other.id)))
	}
	{
		f, g := newInc(), newInc()
		add("wrong destination incarnation", DropWrongDestination, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, wire.Endpoint{ID: target.id, Incarnation: g}, poison(77, target.id)))
	}
	{
		f := newInc()
		add("spoofed source", DropSourceMismatch, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: lead.id, Incarnation: lead.inc}, me, poison(lead.id, target.id)))
	}
	add("tombstoned id", DropTombstoned, 1, inc9,
		envelope(t, c.cluster, wire.Endpoint{ID: 9, Incarnation: inc9}, me, poison(9, target.id)))
	add("tombstoned incarnation under a new id", DropTombstoned, 1, inc9,
		envelope(t, c.cluster, wire.Endpoint{ID: 10, Incarnation: inc9}, me, poison(10, target.id)))
	{
		f := newInc()
		add("stale incarnation", DropStaleIncarnation, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: other.id, Incarnation: f}, me, poison(other.id, target.id)))
	}
	{
		f := newInc()
		add("someone else claims my id", DropStaleIncarnation, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: target.id, Incarnation: f}, me, poison(target.id, target.id)))
	}
	{
		f := newInc()
		b := envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, poison(77, target.id))
		b[2] = wire.MaxVersion + 1
		add("unsupported version", DropVersion, 1, f, b)
	}
	{
		// A stranger: a made-up incarnation claiming an unused Raft ID
		// (issue 9). Counted by the messages its body claims.
		f := newInc()
		add("unknown sender", DropUnknownSender, 2, f,
			envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, heartbeat(77, target.id), poison(77, target.id)))
	}
	{
		f := newInc()
		snap := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(77), To: proto.Uint64(target.id),
			Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(1 << 40), Term: proto.Uint64(1 << 40)}}}
		add("unknown sender with a snapshot", DropUnknownSender, 1, f,
			envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, snap))
	}
	{
		// The header is checked before the body: a stranger's garbage
		// body is an unknown sender, not a decode error.
		f := newInc()
		b := envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, poison(77, target.id))
		add("unknown sender, truncated body", DropUnknownSender, 1, f, b[:len(b)-3])
	}
	{
		// A member's truncated envelope passes the header checks and fails
		// the body's.
		b := envelope(t, c.cluster, wire.Endpoint{ID: other.id, Incarnation: other.inc}, me, poison(other.id, target.id))
		add("truncated", DropDecode, 1, other.inc, b[:len(b)-3])
	}
	{
		f := newInc()
		add("random bytes", DropDecode, 1, f, randBytes(r, 200))
	}
	{
		f := newInc()
		cases = append(cases, tc{name: "message envelope on the snap subject", reason: DropDecode, count: 1, src: f, kind: bus.KindSnap,
			payload: envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, poison(77, target.id))})
	}
	{
		f := newInc()
		cases = append(cases, tc{name: "unknown kind", reason: DropUnknownKind, count: 1, src: f, kind: "zzz",
			payload: envelope(t, c.cluster, wire.Endpoint{ID: 77, Incarnation: f}, me, poison(77, target.id))})
	}
	{
		f := newInc()
		cases = append(cases, tc{name: "not a bus frame", reason: DropDecode, count: 1, src: f, kind: bus.KindMsg,
			frame: []byte("definitely not a frame")})
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := target.bridge.Stats().Dropped[tc.reason]
			if tc.frame != nil {
				c.net.Inject(wire.Subject(testPrefix, c.cluster, target.inc, tc.src, tc.kind), tc.frame)
			} else {
				c.inject(target, tc.src, tc.kind, tc.payload)
			}
			waitFor(t, testWait, fmt.Sprintf("%s drop", tc.reason), func() bool {
				return target.bridge.Stats().Dropped[tc.reason] >= before+tc.count
			})
			if got := target.bridge.Stats().Dropped[tc.reason]; got != before+tc.count {
				t.Errorf("%s drops went from %d to %d, want +%d", tc.reason, before, got, tc.count)
			}
			// The cluster keeps committing, the target included.
			c.propose(values(fmt.Sprintf("after-%d", i), 5))
		})
	}
	c.assertSameLog()

	if got := metricValue(t, target.bridge.meter.prom.dropped.WithLabelValues(string(DropStaleIncarnation))); got != 2 {
		t.Errorf(`raftbus_transport_dropped_messages_total{reason="stale_incarnation"} = %v, want 2`, got)
	}
	// Nothing forged ever reached raft, and nobody ever answered a forger.
	for _, id := range []uint64{9, 10, 77} {
		if n := target.raft.processedFrom(id); n != 0 {
			t.Errorf("raft processed %d messages from forged id %d", n, id)
		}
	}
	for _, tn := range c.all() {
		for _, f := range forged {
			if n := tn.bus.sends(f); n != 0 {
				t.Errorf("node %d sent %d payloads to the dropped sender %s", tn.id, n, f)
			}
		}
	}
}

// TestInboundValidationOrder drives deliver directly, to pin down the
// checks that need a subject no real bus would deliver, and Process
// failures.
func TestInboundValidationOrder(t *testing.T) {
	cluster, me, peer := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	dir := NewMemDirectory()
	dir.Set(1, me)
	dir.Set(2, peer)
	r := newRecordingRaft()
	b, err := New(Config{Cluster: cluster, ID: 1, Incarnation: me, Bus: discardBus{}, Directory: dir, Raft: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	good := envelope(t, cluster, wire.Endpoint{ID: 2, Incarnation: peer}, wire.Endpoint{ID: 1, Incarnation: me}, heartbeat(2, 1))
	deliver := func(d bus.Delivery) { receiver{b}.Deliver(d) }
	d := bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindMsg, Data: good}

	// Subject tokens disagreeing with a correct envelope.
	wrongCluster := d
	wrongCluster.Cluster = uuid.Must(uuid.NewV7())
	deliver(wrongCluster)
	wrongTo := d
	wrongTo.To = uuid.Must(uuid.NewV7())
	deliver(wrongTo)
	// Invalid source IDs.
	deliver(bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindMsg,
		Data: envelope(t, cluster, wire.Endpoint{ID: 0, Incarnation: peer}, wire.Endpoint{ID: 1, Incarnation: me}, heartbeat(0, 1))})
	deliver(bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindMsg,
		Data: envelope(t, cluster, wire.Endpoint{ID: ^uint64(0), Incarnation: peer}, wire.Endpoint{ID: 1, Incarnation: me}, heartbeat(^uint64(0), 1))})
	// The first failing check decides: wrong cluster and tombstoned -> cluster.
	dir.Set(3, uuid.Must(uuid.NewV7()))
	dir.Remove(3)
	deliver(bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindMsg,
		Data: envelope(t, uuid.Must(uuid.NewV7()), wire.Endpoint{ID: 3, Incarnation: peer}, wire.Endpoint{ID: 1, Incarnation: me}, heartbeat(3, 1))})
	// A bus-level drop.
	receiver{b}.Dropped(peer, bus.DropBadFrame, 2)
	receiver{b}.Dropped(uuid.Nil, bus.DropSlowConsumer, 5)

	st := b.Stats()
	want := map[bus.DropReason]uint64{
		DropClusterMismatch: 2, DropWrongDestination: 1, DropSourceMismatch: 2,
		DropDecode: 2, bus.DropSlowConsumer: 5,
	}
	for reason, n := range want {
		if st.Dropped[reason] != n {
			t.Errorf("%s: %d drops, want %d (all: %v)", reason, st.Dropped[reason], n, st.Dropped)
		}
	}
	if r.processedCount() != 0 {
		t.Fatalf("%d messages reached raft", r.processedCount())
	}

	// Process errors are drops too, one per message.
	r.mu.Lock()
	r.processErr = errors.New("node busy")
	r.mu.Unlock()
	deliver(bus.Delivery{Cluster: cluster, To: me, From: peer, Kind: bus.KindMsg,
		Data: envelope(t, cluster, wire.Endpoint{ID: 2, Incarnation: peer}, wire.Endpoint{ID: 1, Incarnation: me}, heartbeat(2, 1), heartbeat(2, 1))})
	if got := b.Stats().Dropped[DropProcessFailed]; got != 2 {
		t.Fatalf("process_failed drops %d, want 2", got)
	}
	// A good envelope is counted as received from its peer.
	r.mu.Lock()
	r.processErr = nil
	r.mu.Unlock()
	deliver(d)
	st = b.Stats()
	if st.Received[2].Messages != 3 || st.Received[2].Bytes == 0 {
		t.Fatalf("received from 2: %+v", st.Received[2])
	}
	if !bytes.Equal(d.Data, good) {
		t.Fatal("deliver modified the payload")
	}
}
