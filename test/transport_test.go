package test

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/internal/wire"
)

// Test 1 and 2 of the core transport: three etcd raft nodes elect a leader,
// commit 1,000 proposals made through every node, and apply the identical
// sequence — over the in-memory bus, one embedded nats-server, and a
// three-server NATS cluster with each node on a different server.
func TestThreeNodesCommit(t *testing.T) {
	kinds := map[string]func(t *testing.T) *busKind{
		"membus":      func(t *testing.T) *busKind { k, _ := memBuses(t, 1); return k },
		"nats":        func(t *testing.T) *busKind { return natsBuses(testnats.RunClusterOrSingle(t, 1)) },
		"natscluster": func(t *testing.T) *busKind { return natsBuses(testnats.RunClusterOrSingle(t, 3)) },
	}
	for _, name := range []string{"membus", "nats", "natscluster"} {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, kinds[name](t), 3)
			c.leader()
			nodes := c.running()
			c.propose(nodes, "p", 1000)
			c.converge(nodes, 1000)
			for _, tn := range nodes {
				if st := tn.node.Status(); st.Applied < 1000 || len(st.Members) != 3 {
					t.Fatalf("node %s status: applied %d, %d members", tn.name, st.Applied, len(st.Members))
				}
			}
		})
	}
}

// Test 3: the seed scenario at transport level. Node 2 is removed while its
// old process keeps running (it is cut off while the removal commits, so it
// never learns of it) and then keeps sending. A new node takes node 2's name
// with a new incarnation. The new node receives nothing meant for the old
// one, the old node's traffic is dropped by the peers as tombstoned, and the
// cluster keeps committing.
func TestRemovedNodeReplacedOnSameName(t *testing.T) {
	for _, name := range []string{"membus", "nats"} {
		t.Run(name, func(t *testing.T) {
			var kind *busKind
			if name == "membus" {
				kind, _ = memBuses(t, 3)
			} else {
				kind = natsBuses(testnats.RunClusterOrSingle(t, 1))
			}
			c := newCluster(t, kind, 3)
			c.leader()
			c.propose(c.running(), "before", 100)
			c.converge(c.running(), 100)

			old2 := c.nodes[2]
			old2.bus.cut.Store(true)
			lead := c.leader()
			if lead.id == 2 {
				// The cut-off leader steps down (CheckQuorum); wait for the others.
				testnats.Eventually(t, 15*time.Second, func() error {
					if l := c.nodes[1].node.Leader(); l == 0 || l == 2 {
						return fmt.Errorf("node 1 sees leader %x", l)
					}
					return nil
				})
				lead = c.nodes[c.nodes[1].node.Leader()]
			}
			ctx := t.Context()
			if _, err := lead.node.RemoveMember(ctx, 2); err != nil {
				t.Fatalf("remove node 2: %v", err)
			}
			// The new node: same name, new incarnation, new Raft ID (IDs are
			// never reused). Added as a member, then started empty so it
			// catches up from the leader.
			newMember := newMemberFor(t, 4, "n2")
			if _, err := lead.node.AddMember(ctx, newMember); err != nil {
				t.Fatalf("add replacement: %v", err)
			}
			new2 := c.start(3, newMember, nil, newStorage())
			// The old process comes back on the network and keeps sending.
			old2.bus.cut.Store(false)

			live := []*tnode{c.nodes[1], c.nodes[3], new2}
			c.propose(live, "after", 300)
			c.converge(live, 400)

			testnats.Eventually(t, 15*time.Second, func() error {
				var n uint64
				for _, tn := range []*tnode{c.nodes[1], c.nodes[3]} {
					n += dropped(tn, "tombstoned")
				}
				if n == 0 {
					return fmt.Errorf("no tombstoned drops at the peers yet")
				}
				return nil
			})
			for _, d := range new2.bus.deliveries() {
				if d.To != new2.inc {
					t.Fatalf("new node received a delivery addressed to %s", d.To)
				}
				if d.From == old2.inc {
					t.Fatalf("new node received traffic from the old incarnation")
				}
			}
			if old2.node.Err() != nil {
				t.Fatalf("old node 2 stopped (%v): it must not learn its removal from peers' drops", old2.node.Err())
			}
			if st := old2.node.Status(); len(old2.sm.list()) > 100 {
				t.Fatalf("old node 2 applied writes after its removal: %d (status %+v)", len(old2.sm.list()), st)
			}
			for _, tn := range live {
				if got := dropped(tn, "wrong_destination"); got != 0 {
					t.Fatalf("node %s dropped %d misdirected messages", tn.name, got)
				}
			}
		})
	}
}

// Test 4: handcrafted bytes published straight onto NATS, on the subject a
// peer really uses, one case per drop reason. The right counter moves and
// the cluster keeps committing. The forged message is a heartbeat with a
// commit index far beyond the log: had it reached etcd raft, it would have
// panicked ("tocommit out of range").
func TestInboundDropReasonsOverNATS(t *testing.T) {
	servers := testnats.RunClusterOrSingle(t, 1)
	c := newCluster(t, natsBuses(servers), 3)
	c.leader()
	c.propose(c.running(), "warm", 10)
	c.converge(c.running(), 10)

	// Node 3 is removed so that its identity is tombstoned.
	n1, n2, n3 := c.nodes[1], c.nodes[2], c.nodes[3]
	if _, err := c.leader().node.RemoveMember(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 10*time.Second, func() error {
		if !n3.node.Status().Removed && n3.node.Err() == nil {
			return fmt.Errorf("node 3 has not stopped")
		}
		return nil
	})
	nc := testnats.Connect(t, servers[0])

	me := wire.Endpoint{ID: 1, Incarnation: n1.inc}
	peer := wire.Endpoint{ID: 2, Incarnation: n2.inc}
	gone := wire.Endpoint{ID: 3, Incarnation: n3.inc}
	stranger := wire.Endpoint{ID: 2, Incarnation: uuid.New()}
	heartbeat := func(from, to uint64) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
			Term: proto.Uint64(1 << 40), Commit: proto.Uint64(1 << 50)}
	}
	envelope := func(h wire.Header, msgs ...*raftpb.Message) []byte {
		h.Kind = wire.EnvelopeMessages
		b, err := wire.AppendEnvelope(nil, &h, msgs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := wire.Header{Cluster: c.cluster, From: peer, To: me}
	withVersion := func(b []byte, v byte) []byte { b[2] = v; return b }
	rnd := rand.New(rand.NewSource(7))
	random := make([]byte, 300)
	rnd.Read(random)

	cases := []struct {
		reason  string
		srcTok  uuid.UUID // the subject's source token
		payload []byte
		raw     bool // publish without the bus frame
	}{
		{"cluster_mismatch", peer.Incarnation, envelope(wire.Header{Cluster: uuid.New(), From: peer, To: me}, heartbeat(2, 1)), false},
		{"wrong_destination", peer.Incarnation, envelope(wire.Header{Cluster: c.cluster, From: peer, To: wire.Endpoint{ID: 1, Incarnation: uuid.New()}}, heartbeat(2, 1)), false},
		{"source_mismatch", uuid.New(), envelope(good, heartbeat(2, 1)), false},
		{"tombstoned", gone.Incarnation, envelope(wire.Header{Cluster: c.cluster, From: gone, To: me}, heartbeat(3, 1)), false},
		{"stale_incarnation", stranger.Incarnation, envelope(wire.Header{Cluster: c.cluster, From: stranger, To: me}, heartbeat(2, 1)), false},
		// A member's incarnation under a Raft ID nobody holds.
		{"stale_incarnation", peer.Incarnation, envelope(wire.Header{Cluster: c.cluster, From: wire.Endpoint{ID: 9, Incarnation: peer.Incarnation}, To: me}, heartbeat(9, 1)), false},
		{"version", peer.Incarnation, withVersion(envelope(good, heartbeat(2, 1)), 99), false},
		{"message_mismatch", peer.Incarnation, envelope(good, heartbeat(5, 1)), false},
		{"decode", peer.Incarnation, envelope(good, heartbeat(2, 1))[:40], false},
		{"decode", peer.Incarnation, random, false},
		{"decode", peer.Incarnation, random, true},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d-%s", i, tc.reason), func(t *testing.T) {
			before := dropped(n1, tc.reason)
			data := tc.payload
			if !tc.raw {
				data = wire.AppendFrame(nil, [][]byte{tc.payload})
			}
			subj := wire.Subject(bus.DefaultPrefix, c.cluster, n1.inc, tc.srcTok, bus.KindMsg)
			if err := nc.Publish(subj, data); err != nil {
				t.Fatal(err)
			}
			testnats.Eventually(t, 5*time.Second, func() error {
				if got := dropped(n1, tc.reason); got <= before {
					return fmt.Errorf("%s drops still %d", tc.reason, got)
				}
				return nil
			})
			c.propose([]*tnode{n1, n2}, "after-"+tc.reason+fmt.Sprint(i), 5)
		})
	}
	if n1.node.Err() != nil || n2.node.Err() != nil {
		t.Fatal("a node stopped")
	}
}
