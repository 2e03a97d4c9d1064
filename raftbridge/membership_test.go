package raftbridge

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
)

// A new follower's directory knows nobody: it must still hear the leader
// (unknown senders pass) and answer it (provisional reply route), until the
// log it replicates teaches it the membership.
func TestNewFollowerHearsLeaderAndReplies(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 6})
	c.propose(values("old", 50))

	inc4 := uuid.Must(uuid.NewV7())
	n4 := c.startNode(4, inc4, nil)
	if n4.dir.Version() != 0 {
		t.Fatal("the new node's directory is not empty")
	}
	c.confChange(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(4), Context: inc4[:]},
		c.node(1), c.node(2), c.node(3), n4)
	c.propose(values("new", 50))
	c.assertSameLog()

	st := n4.bridge.Stats()
	if st.UnknownSender == 0 {
		t.Error("the new follower counted no messages from unknown senders")
	}
	if st.ReplyRouted == 0 {
		t.Error("the new follower never answered through a reply route")
	}
	if st.Dropped[DropUnknownPeer] != 0 {
		t.Errorf("the new follower dropped %d replies as unknown_peer", st.Dropped[DropUnknownPeer])
	}
	if got := metricValue(t, n4.bridge.meter.prom.unknownSender); got != float64(st.UnknownSender) {
		t.Errorf("raftbus_transport_unknown_sender_total = %v, Stats says %d", got, st.UnknownSender)
	}
	// Membership came from the log, and the directory now wins.
	for id := uint64(1); id <= 4; id++ {
		if _, ok := n4.dir.Incarnation(id); !ok {
			t.Errorf("node 4's directory lacks %d", id)
		}
	}
	lead := c.leader()
	if _, ok := n4.bridge.routes.lookup(lead.id, n4.dir); ok {
		t.Error("a reply route outlived the directory entry")
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
		if _, ok := tn.bridge.routes.lookup(gone.id, tn.dir); ok {
			t.Errorf("node %d holds a reply route to the removed member", tn.id)
		}
	}
	// The same ID under a new incarnation is still refused.
	target := rest[0]
	fresh := uuid.Must(uuid.NewV7())
	before := target.bridge.Stats().Dropped[DropTombstoned]
	c.inject(target, fresh, bus.KindMsg, envelope(t, c.cluster, Endpoint{gone.id, fresh}, Endpoint{target.id, target.inc}, poison(gone.id, target.id)))
	waitFor(t, testWait, "the reused id to be dropped", func() bool {
		return target.bridge.Stats().Dropped[DropTombstoned] > before
	})
	if n := target.bus.sends(fresh); n != 0 {
		t.Errorf("answered the reused id %d times", n)
	}
}

func TestReplyRoutes(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newReplyRoutes(time.Minute, 2)
	r.now = func() time.Time { return now }
	dir := NewMemDirectory()
	a, b, c := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	r.remember(1, a)
	now = now.Add(time.Second)
	r.remember(2, b)
	if inc, ok := r.lookup(1, dir); !ok || inc != a {
		t.Fatalf("route to 1: %v %v", inc, ok)
	}
	// Full: the route closest to expiry (1) makes room.
	r.remember(3, c)
	if _, ok := r.lookup(1, dir); ok {
		t.Error("route 1 survived eviction")
	}
	// The directory wins.
	dir.Set(2, c)
	if _, ok := r.lookup(2, dir); ok {
		t.Error("route used although the directory knows the id")
	}
	// Tombstones kill routes.
	r.remember(4, a)
	dir.TombstoneIncarnation(a)
	if _, ok := r.lookup(4, dir); ok {
		t.Error("route through a tombstoned incarnation")
	}
	// Routes expire.
	r.remember(5, b)
	now = now.Add(2 * time.Minute)
	if _, ok := r.lookup(5, dir); ok {
		t.Error("expired route used")
	}
}
