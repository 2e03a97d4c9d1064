package raftbridge

import (
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
)

// Issue 11: the drop metric mixed units. Raft messages and whole envelopes
// are now counted apart; Stats.Dropped stays their sum.
func TestDropUnitsAreKeptApart(t *testing.T) {
	d := newDirectBridge(t, newRecordingRaft(), nil)
	// Three messages of which one is not for this node: one message drop.
	d.fromPeer(t, heartbeat(2, 1), heartbeat(2, 5), heartbeat(2, 1))
	// Garbage: one envelope, no messages known.
	receiver{d.b}.Deliver(bus.Delivery{Cluster: d.cluster, To: d.me, From: d.peer, Kind: bus.KindMsg, Data: []byte("garbage")})
	// A bus-level drop of 4 payloads.
	receiver{d.b}.Dropped(d.peer, bus.DropSlowConsumer, 4)

	st := d.b.Stats()
	if st.DroppedMessages[DropMessageMismatch] != 1 || st.DroppedEnvelopes[DropMessageMismatch] != 0 {
		t.Errorf("message_mismatch: %d messages, %d envelopes; want 1, 0", st.DroppedMessages[DropMessageMismatch], st.DroppedEnvelopes[DropMessageMismatch])
	}
	if st.DroppedEnvelopes[DropDecode] != 1 || st.DroppedMessages[DropDecode] != 0 {
		t.Errorf("decode: %d envelopes, %d messages; want 1, 0", st.DroppedEnvelopes[DropDecode], st.DroppedMessages[DropDecode])
	}
	if st.DroppedEnvelopes[bus.DropSlowConsumer] != 4 {
		t.Errorf("slow_consumer envelopes %d, want 4", st.DroppedEnvelopes[bus.DropSlowConsumer])
	}
	for _, r := range []bus.DropReason{DropMessageMismatch, DropDecode, bus.DropSlowConsumer} {
		if st.Dropped[r] != st.DroppedMessages[r]+st.DroppedEnvelopes[r] {
			t.Errorf("%s: Dropped %d is not the sum", r, st.Dropped[r])
		}
	}
	fams := gathered(t, d.reg)
	find := func(fam, reason string) (float64, bool) {
		for _, m := range fams[fam].GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue(), true
			}
		}
		return 0, false
	}
	if v, _ := find("raftbus_transport_dropped_messages_total", "decode"); v != 0 {
		t.Errorf("an undecodable envelope counted as %v messages", v)
	}
	if v, _ := find("raftbus_transport_dropped_envelopes_total", "decode"); v != 1 {
		t.Errorf("dropped_envelopes_total{decode} = %v, want 1", v)
	}
	// Every production reason exists before its first drop, and the
	// in-memory bus's fault injection does not.
	for _, fam := range []string{"raftbus_transport_dropped_messages_total", "raftbus_transport_dropped_envelopes_total"} {
		for _, r := range DropReasons {
			if _, ok := find(fam, string(r)); !ok {
				t.Errorf("%s{reason=%q} missing", fam, r)
			}
		}
		if _, ok := find(fam, string(bus.DropPartitioned)); ok {
			t.Errorf("%s has the fault-injection reason", fam)
		}
	}
}

// Issue 11: series of removed peers were never deleted.
func TestRemovedPeerSeriesAreDeleted(t *testing.T) {
	d := newDirectBridge(t, newRecordingRaft(), nil)
	d.fromPeer(t, heartbeat(2, 1))
	d.b.Send([]*raftpb.Message{heartbeat(1, 2), heartbeat(1, 3)})
	d.b.meter.unreachable(3)
	has := func(peer uint64) bool {
		for _, f := range gathered(t, d.reg) {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "peer" && l.GetValue() == peerLabel(peer) {
						return true
					}
				}
			}
		}
		return false
	}
	if !has(2) || !has(3) {
		t.Fatal("no per-peer series before the removal")
	}
	d.dir.Remove(3)
	if has(3) {
		t.Error("the removed peer's series are still exported")
	}
	if !has(2) {
		t.Error("a current member's series were deleted")
	}
	st := d.b.Stats()
	if _, ok := st.Sent[3]; ok {
		t.Errorf("Stats still counts the removed peer: %v", st.Sent)
	}
	if _, ok := st.Unreachable[3]; ok {
		t.Errorf("Stats still counts the removed peer: %v", st.Unreachable)
	}
}

// The leader's heartbeat round trip: measured from the oldest unanswered
// heartbeat, so a slow follower shows its delay, not the heartbeat
// interval.
func TestHeartbeatRoundTrip(t *testing.T) {
	m := newMeter()
	now := time.Unix(100, 0)
	m.now = func() time.Time { return now }
	hb := []*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2)}}
	m.heartbeatsSent(2, hb)
	now = now.Add(100 * time.Millisecond)
	m.heartbeatsSent(2, hb) // unanswered: the first one's time stays
	now = now.Add(150 * time.Millisecond)
	m.heartbeatAnswered(2)
	if got := m.snapshot().PeerRTT[2]; got != 250*time.Millisecond {
		t.Errorf("RTT %v, want 250ms", got)
	}
	// An answer without a heartbeat outstanding measures nothing.
	m.heartbeatAnswered(2)
	if got := m.snapshot().PeerRTT[2]; got != 250*time.Millisecond {
		t.Errorf("RTT changed to %v without a heartbeat", got)
	}
	// An appended message is no heartbeat.
	m.heartbeatsSent(3, []*raftpb.Message{{Type: raftpb.MsgApp.Enum()}})
	if _, ok := m.hbSent[3]; ok {
		t.Error("a MsgApp started a round trip")
	}
	// Active peers: heard within the window.
	m.received(2, 1, 10, 0)
	if n := m.activePeers(); n != 1 {
		t.Errorf("%d active peers, want 1", n)
	}
	now = now.Add(ActivePeerWindow)
	if n := m.activePeers(); n != 0 {
		t.Errorf("%d active peers after the window, want 0", n)
	}
}
