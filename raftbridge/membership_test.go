package raftbridge

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// A joining node primes its directory with the members before Raft starts
// (the node runtime does it from verified membership records), so it hears
// its leader and answers it without ever trusting a stranger.
func TestJoiningNodeWithPrimedDirectory(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 6})
	c.propose(values("old", 50))

	inc4 := uuid.Must(uuid.NewV7())
	dir := NewMemDirectory()
	for id, inc := range c.node(1).dir.Members() {
		dir.Set(id, inc)
	}
	dir.Set(4, inc4)
	n4 := c.startNodeWith(4, inc4, nil, dir)
	c.confChange(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(4), Context: inc4[:]},
		c.node(1), c.node(2), c.node(3), n4)
	c.propose(values("new", 50))
	c.assertSameLog()

	st := n4.bridge.Stats()
	for _, reason := range []bus.DropReason{DropUnknownSender, DropUnknownPeer} {
		if st.Dropped[reason] != 0 {
			t.Errorf("the new follower dropped %d messages as %s", st.Dropped[reason], reason)
		}
	}
	if lead := c.leader(); st.Received[lead.id].Messages == 0 {
		t.Errorf("nothing counted as received from the leader %d: %+v", lead.id, st.Received)
	}
}

// A node whose directory does not know the cluster (a stranger to it, and
// it a stranger to them) gets nothing through in either direction: its
// campaigns never reach the members' Raft and get no reply, and the
// members' traffic never reaches it.
func TestStrangerNeverReachesRaft(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 8})
	c.propose(values("before", 10))
	inc4 := uuid.Must(uuid.NewV7())
	// Node 4 believes it is in a cluster of 1, 2, 3 and itself, but the
	// members never added it: it campaigns at them.
	var peers []raft.Peer
	for id, inc := range c.node(1).dir.Members() {
		peers = append(peers, raft.Peer{ID: id, Context: bytes.Clone(inc[:])})
	}
	peers = append(peers, raft.Peer{ID: 4, Context: inc4[:]})
	n4 := c.startNodeWith(4, inc4, peers, NewMemDirectory())
	waitFor(t, testWait, "the stranger's traffic to be dropped", func() bool {
		for _, tn := range c.all() {
			if tn != n4 && tn.bridge.Stats().Dropped[DropUnknownSender] > 0 {
				return true
			}
		}
		return false
	})
	c.propose(values("after", 10), c.node(1), c.node(2), c.node(3))
	c.assertSameLog(c.node(1), c.node(2), c.node(3))
	for _, tn := range c.all() {
		if tn == n4 {
			continue
		}
		if n := tn.raft.processedFrom(4); n != 0 {
			t.Errorf("node %d stepped %d messages from the stranger", tn.id, n)
		}
		if n := tn.bus.sends(inc4); n != 0 {
			t.Errorf("node %d sent %d payloads to the stranger", tn.id, n)
		}
	}
}

// A member removed while it was cut off does not know it was removed: it
// campaigns, with ever higher terms. Nothing it sends may reach Raft, and
// nobody may answer it.
func TestRemovedMemberNeverPasses(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 7})
	c.propose(values("before", 20))
	lead := c.leader()
	var gone *testNode
	var rest []*testNode
	for _, tn := range c.all() {
		if tn != lead && gone == nil {
			gone = tn
		} else {
			rest = append(rest, tn)
		}
	}
	c.net.Isolate(gone.inc)
	c.confChange(&raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(gone.id)}, rest...)
	for _, tn := range rest {
		if !tn.dir.RemovedID(gone.id) || !tn.dir.RemovedIncarnation(gone.inc) {
			t.Fatalf("node %d did not tombstone %d", tn.id, gone.id)
		}
	}
	// Let the committed removal settle before taking the baselines.
	c.propose(values("settle", 5), rest...)
	processed := map[uint64]int{}
	sent := map[uint64]int{}
	for _, tn := range rest {
		processed[tn.id] = tn.raft.processedFrom(gone.id)
		sent[tn.id] = tn.bus.sends(gone.inc)
	}
	c.net.Heal()
	// The removed member campaigns (its election timeout is 100-200 ms)
	// and its traffic is dropped as tombstoned.
	waitFor(t, testWait, "tombstoned drops", func() bool {
		for _, tn := range rest {
			if tn.bridge.Stats().Dropped[DropTombstoned] > 0 {
				return true
			}
		}
		return false
	})
	c.propose(values("after", 20), rest...)
	c.assertSameLog(rest...)
	for _, tn := range rest {
		if n := tn.raft.processedFrom(gone.id) - processed[tn.id]; n != 0 {
			t.Errorf("node %d processed %d messages from the removed member", tn.id, n)
		}
		if n := tn.bus.sends(gone.inc) - sent[tn.id]; n != 0 {
			t.Errorf("node %d sent %d payloads to the removed member", tn.id, n)
		}
	}
	// The same ID under a new incarnation is still refused.
	target := rest[0]
	fresh := uuid.Must(uuid.NewV7())
	before := target.bridge.Stats().Dropped[DropTombstoned]
	c.inject(target, fresh, bus.KindMsg, envelope(t, c.cluster, wire.Endpoint{ID: gone.id, Incarnation: fresh}, wire.Endpoint{ID: target.id, Incarnation: target.inc}, poison(gone.id, target.id)))
	waitFor(t, testWait, "the reused id to be dropped", func() bool {
		return target.bridge.Stats().Dropped[DropTombstoned] > before
	})
	if n := target.bus.sends(fresh); n != 0 {
		t.Errorf("answered the reused id %d times", n)
	}
}

// Issue 8 item 6, end to end: a follower that receives a peer's
// MsgReadIndex forwards it to its leader with the peer's From (raft's
// stepFollower); the leader must step it and answer the original requester
// with a MsgReadIndexResp, and nothing is dropped on the way.
func TestForwardedReadIndexReachesLeaderAndRequester(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 9})
	c.propose(values("before", 10))
	lead := c.leader()
	var via, requester *testNode
	for _, tn := range c.all() {
		switch {
		case tn == lead:
		case via == nil:
			via = tn
		default:
			requester = tn
		}
	}
	const rctx = "read-through-a-follower"
	answered := make(chan struct{})
	var once sync.Once
	lead.bus.setHook(func(to uuid.UUID, kind bus.Kind, data []byte) []byte {
		if to != requester.inc || kind != bus.KindMsg {
			return data
		}
		env, err := wire.DecodeEnvelope(data)
		if err != nil {
			return data
		}
		for _, m := range env.Messages {
			if m.GetType() == raftpb.MsgReadIndexResp && len(m.GetEntries()) == 1 && string(m.GetEntries()[0].GetData()) == rctx {
				once.Do(func() { close(answered) })
			}
		}
		return data
	})
	before := lead.bridge.Stats().Dropped[DropMessageMismatch]
	// The requester's read request, sent to a node that is not the leader
	// (as after a leadership change the requester has not yet heard of).
	c.inject(via, requester.inc, bus.KindMsg, envelope(t, c.cluster,
		wire.Endpoint{ID: requester.id, Incarnation: requester.inc}, wire.Endpoint{ID: via.id, Incarnation: via.inc},
		&raftpb.Message{Type: raftpb.MsgReadIndex.Enum(), From: proto.Uint64(requester.id), To: proto.Uint64(via.id),
			Entries: []*raftpb.Entry{{Data: []byte(rctx)}}}))
	select {
	case <-answered:
	case <-time.After(testWait):
		t.Fatalf("the leader never answered the forwarded read; its drops: %v", lead.bridge.Stats().Dropped)
	}
	if got := lead.bridge.Stats().Dropped[DropMessageMismatch]; got != before {
		t.Errorf("the leader dropped %d messages as message_mismatch", got-before)
	}
}
