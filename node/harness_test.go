package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/internal/wire"
	"github.com/raftbus/raftbus/raftbridge"
)

// Deterministic test scaffolding.
//
// Raft time never passes by itself here: every node gets a manualClock as
// its Config.Ticker, and a test ticks the nodes it chooses (usually only
// the leader, so that no follower ever campaigns and leadership is fixed
// by the test). Messages travel over membus (or a fakeTransport that only
// records them), and a test waits for an outcome with eventually, which
// ticks the chosen nodes once per round under a wall-clock deadline.
//
// newPumpHarness goes further: its network holds every frame
// (membus.Network.Hold) and nothing moves unless the test steps it, the
// way etcd raft's interaction tests drive tick / Ready / deliver. A round
// of stepUntil hands over every held frame that h.route lets pass (the
// deliver call returns once the receivers have stepped them), and ticks
// only when nothing was held, so a heartbeat is never answered late by the
// harness itself. Tests shape the network per phase with h.route (pass,
// keep held, drop), capture a frame by ID and replay it, or inspect the
// Raft messages a held frame carries (heldMessages). The wall clock only
// bounds how long a test may take.

// manualClock is a Config.Ticker driven by the test.
type manualClock struct{ c chan time.Time }

func newManualClock() *manualClock { return &manualClock{c: make(chan time.Time)} }

func (k *manualClock) ticker() (<-chan time.Time, func()) { return k.c, func() {} }

// tick hands one tick to the node's Ready loop; it gives up when the node
// stopped.
func (k *manualClock) tick(n *Node) {
	select {
	case k.c <- time.Time{}:
	case <-n.done:
	case <-n.stopc:
	}
}

// mapSM is a tiny state machine: commands are "key=value".
type mapSM struct {
	mu      sync.Mutex
	kv      map[string]string
	applies int
	// restoreHook, when set, replaces Restore.
	restoreHook func([]byte) error
}

func newMapSM() *mapSM { return &mapSM{kv: map[string]string{}} }

func (s *mapSM) Apply(_ uint64, data []byte) (any, error) {
	k, v, ok := strings.Cut(string(data), "=")
	if !ok {
		return nil, fmt.Errorf("bad command %q", data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applies++
	s.kv[k] = v
	return v, nil
}

func (s *mapSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(s.kv)
}

func (s *mapSM) Restore(data []byte) error {
	if s.restoreHook != nil {
		return s.restoreHook(data)
	}
	kv := map[string]string{}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &kv); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv = kv
	return nil
}

func (s *mapSM) get(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kv[k]
}

func (s *mapSM) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applies
}

// fakeTransport records what the node sends and delivers nothing: the test
// steps messages in itself (Process, ReceiveSnapshot).
type fakeTransport struct {
	mu   sync.Mutex
	sent []*raftpb.Message
}

func (f *fakeTransport) Send(msgs []*raftpb.Message) {
	f.mu.Lock()
	f.sent = append(f.sent, msgs...)
	f.mu.Unlock()
}
func (f *fakeTransport) Start() error { return nil }
func (f *fakeTransport) Close() error { return nil }

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("RAFTBUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// eventually calls step and then check, once per round, until check
// succeeds or the deadline passes.
func eventually(t *testing.T, d time.Duration, step func(), check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	pace := time.NewTicker(time.Millisecond)
	defer pace.Stop()
	for {
		if step != nil {
			step()
		}
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		<-pace.C
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// hnode is one node of a harness.
type hnode struct {
	m     Member
	node  *Node
	sm    *mapSM
	st    *MemoryStorage
	clock *manualClock
}

func (hn *hnode) tick() { hn.clock.tick(hn.node) }

// harness is a cluster of nodes over one membus network, on manual clocks.
type harness struct {
	t       *testing.T
	cluster uuid.UUID
	net     *membus.Network
	nodes   map[uint64]*hnode
	// tune adjusts every node's config before it starts.
	tune func(*Config)
	// pumped: the network holds every frame until the harness delivers it.
	pumped bool
	// route decides, on a pumped network, what a round does with each held
	// frame; nil passes everything.
	route func(membus.PendingFrame) verdict
}

// verdict is what a round of a pumped harness does with one held frame.
type verdict int

const (
	pass verdict = iota // deliver it now
	keep                // leave it held
	lose                // discard it
)

func newHarness(t *testing.T, tune func(*Config)) *harness {
	h := &harness{t: t, cluster: uuid.New(), net: membus.NewNetwork(1), nodes: map[uint64]*hnode{}, tune: tune}
	t.Cleanup(h.net.Close)
	return h
}

func newMember(t *testing.T, id uint64) Member {
	inc, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return Member{ID: raftbridge.ID(id), Name: fmt.Sprintf("n%d", id), Incarnation: inc}
}

// bootstrap starts voters 1..n as a new cluster.
func (h *harness) bootstrap(n int) {
	peers := make([]Member, n)
	for i := range peers {
		peers[i] = newMember(h.t, uint64(i+1))
	}
	for _, p := range peers {
		h.start(p, peers, NewMemoryStorage())
	}
}

// start runs a node for m over membus; peers only to bootstrap.
func (h *harness) start(m Member, peers []Member, st *MemoryStorage) *hnode {
	return h.startJoining(m, peers, nil, st)
}

// startJoining is start for a node that joins knowing the members join.
func (h *harness) startJoining(m Member, peers, join []Member, st *MemoryStorage) *hnode {
	t := h.t
	b, err := h.net.NewBus(membus.Config{Cluster: h.cluster, Self: m.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	hn := &hnode{m: m, sm: newMapSM(), st: st, clock: newManualClock()}
	cfg := Config{
		Cluster: h.cluster, ID: uint64(m.ID), Incarnation: m.Incarnation, Name: m.Name,
		Peers: peers, JoinMembers: join, Storage: st, StateMachine: hn.sm, Bus: b,
		TickInterval: 10 * time.Millisecond, Ticker: hn.clock.ticker,
		Logger: testLogger(t).With("node", m.Name),
	}
	if h.tune != nil {
		h.tune(&cfg)
	}
	nd, err := New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", m.Name, err)
	}
	t.Cleanup(nd.Halt)
	hn.node = nd
	h.nodes[uint64(m.ID)] = hn
	return hn
}

// elect makes id the leader: it campaigns, and only it is ticked, so no
// other node ever times out.
func (h *harness) elect(id uint64) *hnode {
	h.t.Helper()
	l := h.nodes[id]
	if err := l.node.raft.Campaign(ctxT(h.t)); err != nil {
		h.t.Fatal(err)
	}
	h.stepUntil(10*time.Second, l.tick, func() error {
		for _, hn := range h.nodes {
			if got := hn.node.Leader(); got != id {
				return fmt.Errorf("%s sees leader %x, want %x", hn.m.Name, got, id)
			}
		}
		return nil
	})
	return l
}

// newPumpHarness is newHarness on a network that holds every frame until
// the test steps it.
func newPumpHarness(t *testing.T, tune func(*Config)) *harness {
	h := newHarness(t, tune)
	h.net.Hold()
	h.pumped = true
	return h
}

// deliver runs one round of the pump: every frame held now is delivered,
// kept or lost as h.route says, in publish order. It returns how many
// frames it delivered, once their receivers have stepped them; frames sent
// in answer stay held for the next round.
func (h *harness) deliver() int {
	h.t.Helper()
	route := h.route
	if route == nil {
		route = func(membus.PendingFrame) verdict { return pass }
	}
	// Decide outside the network's mutex: a route may look into frames.
	var send []uint64
	lost := map[uint64]bool{}
	for _, f := range h.net.Pending() {
		switch route(f) {
		case pass:
			send = append(send, f.ID)
		case lose:
			lost[f.ID] = true
		}
	}
	h.net.Drop(func(f membus.PendingFrame) bool { return lost[f.ID] })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := h.net.Deliver(ctx, send...)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// tickLeaders ticks every node that believes it leads: heartbeats and
// retries keep flowing while no follower ever times out.
func (h *harness) tickLeaders() {
	for _, hn := range h.nodes {
		if hn.node.IsLeader() {
			hn.tick()
		}
	}
}

// stepUntil runs rounds until cond holds, failing the test after d. On a
// pumped network a round delivers (deliver) and calls tick only when there
// was nothing to deliver; otherwise a round is a tick, as in eventually.
// A nil tick ticks the leaders.
func (h *harness) stepUntil(d time.Duration, tick func(), cond func() error) {
	h.t.Helper()
	if tick == nil {
		tick = h.tickLeaders
	}
	if !h.pumped {
		eventually(h.t, d, tick, cond)
		return
	}
	eventually(h.t, d, func() {
		if h.deliver() == 0 {
			tick()
		}
	}, cond)
}

// await runs call in the background and steps the network until it
// returns, and returns its error.
func (h *harness) await(what string, call func() error) error {
	h.t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- call() }()
	var err error
	h.stepUntil(10*time.Second, nil, func() error {
		select {
		case err = <-ch:
			return nil
		default:
			return fmt.Errorf("%s has not returned", what)
		}
	})
	return err
}

// byIncarnation returns the node of incarnation inc, or nil.
func (h *harness) byIncarnation(inc uuid.UUID) *hnode {
	for _, hn := range h.nodes {
		if hn.m.Incarnation == inc {
			return hn
		}
	}
	return nil
}

// heldMessages decodes the Raft messages carried by a held message frame:
// one slice per envelope.
func (h *harness) heldMessages(f membus.PendingFrame) [][]*raftpb.Message {
	h.t.Helper()
	if f.Kind != bus.KindMsg {
		return nil
	}
	data, ok := h.net.PendingData(f.ID)
	if !ok {
		h.t.Fatalf("frame %d is not held", f.ID)
	}
	var out [][]*raftpb.Message
	err := wire.DecodeFrame(data, func(p []byte) {
		env, err := wire.DecodeEnvelope(p)
		if err != nil {
			h.t.Fatalf("frame %d: %v", f.ID, err)
		}
		out = append(out, env.Messages)
	})
	if err != nil {
		h.t.Fatalf("frame %d: %v", f.ID, err)
	}
	return out
}

// waitHeld steps the network (as stepUntil, with h.route for every other
// frame) until a held frame satisfies match, and returns it, still held.
func (h *harness) waitHeld(what string, match func(membus.PendingFrame) bool) membus.PendingFrame {
	h.t.Helper()
	route := h.route
	defer func() { h.route = route }()
	h.route = func(f membus.PendingFrame) verdict {
		switch {
		case match(f):
			return keep
		case route == nil:
			return pass
		}
		return route(f)
	}
	var found membus.PendingFrame
	h.stepUntil(10*time.Second, nil, func() error {
		for _, f := range h.net.Pending() {
			if match(f) {
				found = f
				return nil
			}
		}
		return fmt.Errorf("no held frame %s", what)
	})
	return found
}
