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

	"github.com/raftbus/raftbus/bus/membus"
)

// Deterministic test scaffolding.
//
// Raft time never passes by itself here: every node gets a manualClock as
// its Config.Ticker, and a test ticks the nodes it chooses (usually only
// the leader, so that no follower ever campaigns and leadership is fixed
// by the test). Messages travel over membus (or a fakeTransport that only
// records them), and a test waits for an outcome with eventually, which
// ticks the chosen nodes once per round under a wall-clock deadline.

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
}

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
	return Member{ID: id, Name: fmt.Sprintf("n%d", id), Incarnation: inc}
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
		Cluster: h.cluster, ID: m.ID, Incarnation: m.Incarnation, Name: m.Name,
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
	h.nodes[m.ID] = hn
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
	eventually(h.t, 10*time.Second, l.tick, func() error {
		for _, hn := range h.nodes {
			if got := hn.node.Leader(); got != id {
				return fmt.Errorf("%s sees leader %x, want %x", hn.m.Name, got, id)
			}
		}
		return nil
	})
	return l
}
