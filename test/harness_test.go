package test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
)

// busKind builds one bus per node for a test cluster.
type busKind struct {
	name   string
	newBus func(t *testing.T, cluster, self uuid.UUID, i int) bus.Bus
	// servers is set for NATS kinds, so tests can publish raw bytes.
	servers []*server.Server
}

func memBuses(t *testing.T, seed int64) (*busKind, *membus.Network) {
	net := membus.NewNetwork(seed)
	t.Cleanup(net.Close)
	return &busKind{name: "membus", newBus: func(t *testing.T, cluster, self uuid.UUID, _ int) bus.Bus {
		b, err := net.NewBus(membus.Config{Cluster: cluster, Self: self})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}}, net
}

// natsBuses connects node i to servers[i%len(servers)].
func natsBuses(servers []*server.Server) *busKind {
	return &busKind{name: fmt.Sprintf("nats-%d-servers", len(servers)), servers: servers,
		newBus: func(t *testing.T, cluster, self uuid.UUID, i int) bus.Bus {
			nc := testnats.Connect(t, servers[i%len(servers)])
			b, err := natsbus.New(natsbus.Config{Conn: nc, Cluster: cluster, Self: self})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}}
}

// recordSM is a state machine that records every applied command in order.
type recordSM struct {
	mu      sync.Mutex
	applied []string
}

func (s *recordSM) Apply(index uint64, data []byte) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = append(s.applied, string(data))
	return len(s.applied), nil
}

func (s *recordSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(s.applied)
}

func (s *recordSM) Restore(data []byte) error {
	var v []string
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = v
	return nil
}

func (s *recordSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.applied...)
}

// gateBus wraps a bus so a test can cut one node off (both directions)
// whatever the bus is, and records what the node receives.
type gateBus struct {
	bus.Bus
	cut      atomic.Bool
	mu       sync.Mutex
	received []bus.Delivery
}

func (g *gateBus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	if g.cut.Load() {
		return nil // lost on the wire
	}
	return g.Bus.Send(to, kind, data)
}

func (g *gateBus) Start(r bus.Receiver) error { return g.Bus.Start(&gateReceiver{g: g, r: r}) }

type gateReceiver struct {
	g *gateBus
	r bus.Receiver
}

func (gr *gateReceiver) Deliver(d bus.Delivery) {
	if gr.g.cut.Load() {
		return
	}
	gr.g.mu.Lock()
	gr.g.received = append(gr.g.received, bus.Delivery{Cluster: d.Cluster, To: d.To, From: d.From, Kind: d.Kind})
	gr.g.mu.Unlock()
	gr.r.Deliver(d)
}

func (gr *gateReceiver) Dropped(from uuid.UUID, reason bus.DropReason, n int) {
	gr.r.Dropped(from, reason, n)
}

func (g *gateBus) deliveries() []bus.Delivery {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]bus.Delivery(nil), g.received...)
}

// tnode is one member of a test cluster.
type tnode struct {
	id      uint64
	inc     uuid.UUID
	name    string
	node    *node.Node
	bus     *gateBus
	sm      *recordSM
	reg     *prometheus.Registry
	storage *node.MemoryStorage
}

type testCluster struct {
	t       *testing.T
	cluster uuid.UUID
	kind    *busKind
	nodes   map[uint64]*tnode
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("RAFTBUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newCluster bootstraps n voters with Raft IDs 1..n.
func newCluster(t *testing.T, kind *busKind, n int) *testCluster {
	c := &testCluster{t: t, cluster: uuid.New(), kind: kind, nodes: map[uint64]*tnode{}}
	peers := make([]node.Member, n)
	for i := range peers {
		peers[i] = node.Member{ID: raftbridge.ID(uint64(i + 1)), Name: fmt.Sprintf("n%d", i+1), Incarnation: mustV7(t)}
	}
	for i, p := range peers {
		c.start(i, p, peers, node.NewMemoryStorage())
	}
	return c
}

func mustV7(t *testing.T) uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// start runs a node for member m; peers is non-empty only to bootstrap.
func (c *testCluster) start(i int, m node.Member, peers []node.Member, st *node.MemoryStorage) *tnode {
	t := c.t
	tn := &tnode{id: uint64(m.ID), inc: m.Incarnation, name: m.Name, sm: &recordSM{}, reg: prometheus.NewRegistry(), storage: st}
	tn.bus = &gateBus{Bus: c.kind.newBus(t, c.cluster, m.Incarnation, i)}
	var join []node.Member
	if peers == nil {
		// A joiner learns the members from the cluster, as the server does
		// from verified records; without them its bridge drops the leader
		// as an unknown sender.
		for _, tn := range c.nodes {
			if tn.node.Err() == nil {
				join = tn.node.Members()
				break
			}
		}
	}
	nd, err := node.New(node.Config{
		Cluster: c.cluster, ID: uint64(m.ID), Incarnation: m.Incarnation, Name: m.Name,
		Peers: peers, JoinMembers: join, Storage: st, StateMachine: tn.sm, Bus: tn.bus,
		TickInterval: 20 * time.Millisecond, SnapshotEntries: 100000,
		Logger: testLogger(t).With("node", m.Name), Registerer: tn.reg,
	})
	if err != nil {
		t.Fatalf("start node %s: %v", m.Name, err)
	}
	tn.node = nd
	t.Cleanup(nd.Stop)
	c.nodes[uint64(m.ID)] = tn
	return tn
}

// leader waits for a leader that every running node agrees on.
func (c *testCluster) leader() *tnode {
	c.t.Helper()
	var lead uint64
	testnats.Eventually(c.t, 15*time.Second, func() error {
		lead = 0
		for _, tn := range c.nodes {
			if tn.node.Err() != nil {
				continue
			}
			l := tn.node.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				return fmt.Errorf("node %s sees leader %x", tn.name, l)
			}
			lead = l
		}
		if _, ok := c.nodes[lead]; !ok {
			return fmt.Errorf("leader %x is not a running node", lead)
		}
		return nil
	})
	return c.nodes[lead]
}

// propose writes count commands "prefix-k" through the given nodes in turn,
// retrying while leadership settles, with up to 16 in flight.
func (c *testCluster) propose(via []*tnode, prefix string, count int) {
	c.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, count)
	for k := 0; k < count; k++ {
		tn := via[k%len(via)]
		sem <- struct{}{}
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- proposeRetry(tn.node, []byte(fmt.Sprintf("%s-%d", prefix, k)))
		}(k)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// proposeRetry retries proposals that failed for reasons a client retries:
// no leader yet, dropped during a leader change, timed out.
func proposeRetry(n *node.Node, data []byte) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, _, err := n.Propose(ctx, data)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("propose %q: %w", data, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// converge waits until every running node applied the same sequence, which
// holds want commands (each exactly once), and returns it.
func (c *testCluster) converge(nodes []*tnode, want int) []string {
	c.t.Helper()
	var ref []string
	testnats.Eventually(c.t, 30*time.Second, func() error {
		ref = nodes[0].sm.list()
		if len(ref) < want {
			return fmt.Errorf("node %s applied %d of %d", nodes[0].name, len(ref), want)
		}
		for _, tn := range nodes[1:] {
			got := tn.sm.list()
			if len(got) != len(ref) {
				return fmt.Errorf("node %s applied %d, node %s %d", tn.name, len(got), nodes[0].name, len(ref))
			}
			for i := range got {
				if got[i] != ref[i] {
					return fmt.Errorf("nodes %s and %s differ at %d: %q vs %q", tn.name, nodes[0].name, i, got[i], ref[i])
				}
			}
		}
		return nil
	})
	seen := map[string]bool{}
	for _, cmd := range ref {
		if seen[cmd] {
			c.t.Fatalf("command %q applied twice", cmd)
		}
		seen[cmd] = true
	}
	if len(ref) != want {
		c.t.Fatalf("applied %d commands, want %d", len(ref), want)
	}
	return ref
}

func (c *testCluster) running() []*tnode {
	var out []*tnode
	for id := uint64(1); id <= 64; id++ {
		if tn, ok := c.nodes[id]; ok && tn.node.Err() == nil {
			out = append(out, tn)
		}
	}
	return out
}

func dropped(tn *tnode, reason string) uint64 {
	return tn.node.Status().Dropped[reason]
}

func newMemberFor(t *testing.T, id uint64, name string) node.Member {
	return node.Member{ID: raftbridge.ID(id), Name: name, Incarnation: mustV7(t)}
}

func newStorage() *node.MemoryStorage { return node.NewMemoryStorage() }
