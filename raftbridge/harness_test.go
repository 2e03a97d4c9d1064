package raftbridge

// A small Raft cluster for tests: raft.Node + raft.MemoryStorage per node, a
// Ready loop that persists before it sends through the bridge, applies
// committed entries and conf changes (which feed each node's directory, as
// the node runtime does), and can compact its log into a snapshot.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
)

const (
	testTick       = 10 * time.Millisecond
	testWait       = 20 * time.Second // generous: -race on two cores
	testPrefix     = bus.DefaultPrefix
	testQueueBytes = 16 << 20
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger discards unless RAFTBRIDGE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("RAFTBRIDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

var quietRaftLogger = &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}

// recordingBus wraps a bus and counts what is sent to each incarnation.
type recordingBus struct {
	bus.Bus
	mu     sync.Mutex
	sentTo map[uuid.UUID]int
	// hook, if set, may rewrite or swallow (return nil) a payload.
	hook func(to uuid.UUID, kind bus.Kind, data []byte) []byte
}

func newRecordingBus(b bus.Bus) *recordingBus {
	return &recordingBus{Bus: b, sentTo: make(map[uuid.UUID]int)}
}

func (r *recordingBus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	r.mu.Lock()
	r.sentTo[to]++
	hook := r.hook
	r.mu.Unlock()
	if hook != nil {
		if data = hook(to, kind, data); data == nil {
			return nil // swallowed, as a lossy network would
		}
	}
	return r.Bus.Send(to, kind, data)
}

func (r *recordingBus) setHook(h func(uuid.UUID, bus.Kind, []byte) []byte) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

func (r *recordingBus) sends(to uuid.UUID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sentTo[to]
}

// nodeRaft adapts a raft.Node to the bridge's Raft interface and records
// who it processed messages from.
type nodeRaft struct {
	node raft.Node
	mu   sync.Mutex
	from map[uint64]int
}

func (r *nodeRaft) Process(ctx context.Context, m *raftpb.Message) error {
	r.mu.Lock()
	r.from[m.GetFrom()]++
	r.mu.Unlock()
	return r.node.Step(ctx, m)
}
func (r *nodeRaft) ReportUnreachable(id uint64) { r.node.ReportUnreachable(id) }
func (r *nodeRaft) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	r.node.ReportSnapshot(id, st)
}

func (r *nodeRaft) processedFrom(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.from[id]
}

// clusterOpts tunes a test cluster.
type clusterOpts struct {
	seed      int64
	busConfig func(*membus.Config)
	bridge    func(*Config)
}

type testCluster struct {
	t       *testing.T
	net     *membus.Network
	cluster uuid.UUID
	opts    clusterOpts

	mu    sync.Mutex
	nodes map[uint64]*testNode
}

type testNode struct {
	c       *testCluster
	id      uint64
	inc     uuid.UUID
	dir     *MemDirectory
	storage *raft.MemoryStorage
	node    raft.Node
	raft    *nodeRaft
	mbus    *membus.Bus
	bus     *recordingBus
	bridge  *Bridge
	reg     *prometheus.Registry

	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	applied   [][]byte // data of committed normal entries, in order
	appliedAt uint64   // index of the last applied entry
	confState *raftpb.ConfState
	stopOnce  sync.Once
}

// newTestCluster starts nodes 1..n bootstrapped together.
func newTestCluster(t *testing.T, n int, opts clusterOpts) *testCluster {
	t.Helper()
	c := &testCluster{
		t:       t,
		net:     membus.NewNetwork(opts.seed),
		cluster: uuid.Must(uuid.NewV7()),
		opts:    opts,
		nodes:   make(map[uint64]*testNode),
	}
	t.Cleanup(c.close)
	peers := make([]raft.Peer, n)
	incs := make([]uuid.UUID, n)
	for i := range peers {
		incs[i] = uuid.Must(uuid.NewV7())
		peers[i] = raft.Peer{ID: uint64(i + 1), Context: incs[i][:]}
	}
	for i := range peers {
		c.startNode(uint64(i+1), incs[i], peers)
	}
	return c
}

// startNode starts a node. With peers it bootstraps a new cluster; without
// it starts empty and waits to be added (a joining node).
func (c *testCluster) startNode(id uint64, inc uuid.UUID, peers []raft.Peer) *testNode {
	c.t.Helper()
	return c.startNodeWith(id, inc, peers, NewMemDirectory())
}

// startNodeWith is startNode with a directory the caller prepared (a
// joining node primes it with the members before Raft starts).
func (c *testCluster) startNodeWith(id uint64, inc uuid.UUID, peers []raft.Peer, dir *MemDirectory) *testNode {
	t := c.t
	t.Helper()
	tn := &testNode{
		c: c, id: id, inc: inc, dir: dir, storage: raft.NewMemoryStorage(),
		raft: &nodeRaft{from: make(map[uint64]int)}, reg: prometheus.NewRegistry(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	bcfg := membus.Config{Cluster: c.cluster, Self: inc, MaxQueueBytes: testQueueBytes}
	if c.opts.busConfig != nil {
		c.opts.busConfig(&bcfg)
	}
	mb, err := c.net.NewBus(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.mbus, tn.bus = mb, newRecordingBus(mb)
	cfg := Config{
		Cluster: c.cluster, ID: id, Incarnation: inc,
		Bus: tn.bus, Directory: tn.dir, Raft: tn.raft,
		Logger: testLogger().With("node", id), Registerer: tn.reg,
		SnapshotTimeout: 2 * time.Second, SnapshotRetryBackoff: 50 * time.Millisecond,
	}
	if c.opts.bridge != nil {
		c.opts.bridge(&cfg)
	}
	if tn.bridge, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	rc := &raft.Config{
		ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: tn.storage,
		MaxSizePerMsg: 64 << 10, MaxInflightMsgs: 64, CheckQuorum: true, PreVote: true,
		Logger: quietRaftLogger,
	}
	if peers != nil {
		tn.node = raft.StartNode(rc, peers)
	} else {
		tn.node = raft.RestartNode(rc)
	}
	tn.raft.node = tn.node
	if err := tn.bridge.Start(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[id] = tn
	c.mu.Unlock()
	go tn.run()
	return tn
}

func (c *testCluster) node(id uint64) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *testCluster) all() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*testNode, 0, len(c.nodes))
	for _, id := range slices.Sorted(maps.Keys(c.nodes)) {
		out = append(out, c.nodes[id])
	}
	return out
}

func (c *testCluster) close() {
	for _, tn := range c.all() {
		tn.shutdown()
	}
	c.net.Close()
}

// shutdown stops the Ready loop, then the bridge (so nothing calls into
// the node any more), then the node and the bus.
func (tn *testNode) shutdown() {
	tn.stopOnce.Do(func() {
		close(tn.stop)
		<-tn.done
		if err := tn.bridge.Close(); err != nil {
			tn.c.t.Errorf("bridge %d close: %v", tn.id, err)
		}
		tn.node.Stop()
		_ = tn.mbus.Close()
	})
}

// run is the node's raft loop.
func (tn *testNode) run() {
	defer close(tn.done)
	ticker := time.NewTicker(testTick)
	defer ticker.Stop()
	for {
		select {
		case <-tn.stop:
			return
		case <-ticker.C:
			tn.node.Tick()
		case rd := <-tn.node.Ready():
			if err := tn.handleReady(rd); err != nil {
				tn.c.t.Errorf("node %d: %v", tn.id, err)
				return
			}
			tn.node.Advance()
		}
	}
}

func (tn *testNode) handleReady(rd raft.Ready) error {
	// Persist first (raft's contract), then send, then apply.
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := tn.storage.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("apply snapshot: %w", err)
		}
		if err := tn.restore(rd.Snapshot); err != nil {
			return err
		}
	}
	if err := tn.storage.Append(rd.Entries); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
		if err := tn.storage.SetHardState(rd.HardState); err != nil {
			return fmt.Errorf("hard state: %w", err)
		}
	}
	tn.bridge.Send(rd.Messages)
	for _, e := range rd.CommittedEntries {
		if err := tn.apply(e); err != nil {
			return err
		}
	}
	return nil
}

func (tn *testNode) apply(e *raftpb.Entry) error {
	switch e.GetType() {
	case raftpb.EntryNormal:
		tn.mu.Lock()
		if len(e.GetData()) > 0 {
			tn.applied = append(tn.applied, e.GetData())
		}
		tn.appliedAt = e.GetIndex()
		tn.mu.Unlock()
	case raftpb.EntryConfChange:
		cc := new(raftpb.ConfChange)
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return fmt.Errorf("conf change at %d: %w", e.GetIndex(), err)
		}
		cs := tn.node.ApplyConfChange(cc)
		switch cc.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			inc, err := uuid.FromBytes(cc.GetContext())
			if err != nil {
				return fmt.Errorf("conf change at %d: incarnation: %w", e.GetIndex(), err)
			}
			tn.dir.Set(cc.GetNodeId(), inc)
		case raftpb.ConfChangeRemoveNode:
			tn.dir.Remove(cc.GetNodeId())
		}
		tn.mu.Lock()
		tn.confState = cs
		tn.appliedAt = e.GetIndex()
		tn.mu.Unlock()
	default:
		return fmt.Errorf("unexpected entry type %v", e.GetType())
	}
	return nil
}

// Snapshot data: the applied values, then the directory's members.
func (tn *testNode) snapshotData() []byte {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(tn.applied)))
	for _, v := range tn.applied {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	members := tn.dir.Members()
	b = binary.AppendUvarint(b, uint64(len(members)))
	for id, inc := range members {
		b = binary.AppendUvarint(b, id)
		b = append(b, inc[:]...)
	}
	return b
}

func (tn *testNode) restore(s *raftpb.Snapshot) error {
	r := bytes.NewReader(s.GetData())
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	applied := make([][]byte, 0, n)
	for range n {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		v := make([]byte, l)
		if _, err := io.ReadFull(r, v); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		applied = append(applied, v)
	}
	m, err := binary.ReadUvarint(r)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for range m {
		id, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		var inc uuid.UUID
		if _, err := io.ReadFull(r, inc[:]); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if _, ok := tn.dir.Incarnation(id); !ok {
			tn.dir.Set(id, inc)
		}
	}
	tn.mu.Lock()
	tn.applied = applied
	tn.appliedAt = s.GetMetadata().GetIndex()
	tn.confState = s.GetMetadata().GetConfState()
	tn.mu.Unlock()
	return nil
}

// compact snapshots the applied state and drops the log up to it. It may
// run beside the Ready loop: MemoryStorage is safe for concurrent use and
// only entries already applied (so already stable) are compacted.
func (tn *testNode) compact() error {
	data := tn.snapshotData()
	tn.mu.Lock()
	at, cs := tn.appliedAt, tn.confState
	tn.mu.Unlock()
	if _, err := tn.storage.CreateSnapshot(at, cs, data); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
		return err
	}
	if err := tn.storage.Compact(at); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return err
	}
	return nil
}

func (tn *testNode) appliedValues() [][]byte {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return slices.Clone(tn.applied)
}

func (tn *testNode) appliedSet() map[string]bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	s := make(map[string]bool, len(tn.applied))
	for _, v := range tn.applied {
		s[string(v)] = true
	}
	return s
}

func (tn *testNode) isLeader() bool {
	st := tn.node.Status()
	return st.RaftState == raft.StateLeader
}

// leader waits for a node that considers itself leader and is considered
// leader by every other running node.
func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var lead *testNode
	waitFor(c.t, testWait, "a leader", func() bool {
		for _, tn := range c.all() {
			if tn.isLeader() {
				lead = tn
				return true
			}
		}
		return false
	})
	return lead
}

// propose gets every value committed and applied by all of the given
// nodes (default: all), re-proposing on the current leader what it has not
// applied yet (proposals are lost with leadership changes and drops).
func (c *testCluster) propose(values [][]byte, on ...*testNode) {
	c.t.Helper()
	if len(on) == 0 {
		on = c.all()
	}
	deadline := time.Now().Add(3 * testWait)
	for {
		lead := c.leader()
		have := lead.appliedSet()
		var missing [][]byte
		for _, v := range values {
			if !have[string(v)] {
				missing = append(missing, v)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d proposals not applied by the leader in time", len(missing), len(values))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		for _, v := range missing {
			if err := lead.node.Propose(ctx, v); err != nil {
				break // lost leadership or timed out: look again
			}
		}
		cancel()
		waitUntil(2*time.Second, func() bool {
			have := lead.appliedSet()
			for _, v := range missing {
				if !have[string(v)] {
					return false
				}
			}
			return true
		})
	}
	for _, tn := range on {
		waitFor(c.t, testWait, fmt.Sprintf("node %d to apply %d values", tn.id, len(values)), func() bool {
			have := tn.appliedSet()
			for _, v := range values {
				if !have[string(v)] {
					return false
				}
			}
			return true
		})
	}
}

// waitUntil polls cond for at most d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// values returns n distinct proposal payloads tagged with prefix.
func values(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%05d", prefix, i)
	}
	return out
}

// assertSameLog checks that the given nodes applied identical sequences.
func (c *testCluster) assertSameLog(nodes ...*testNode) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.all()
	}
	// Followers may trail the leader by a few entries; wait until the
	// lengths agree before comparing.
	waitFor(c.t, testWait, "all nodes to apply the same number of entries", func() bool {
		n := len(nodes[0].appliedValues())
		for _, tn := range nodes[1:] {
			if len(tn.appliedValues()) != n {
				return false
			}
		}
		return true
	})
	want := nodes[0].appliedValues()
	for _, tn := range nodes[1:] {
		got := tn.appliedValues()
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				c.t.Fatalf("node %d applied %q at position %d, node %d applied %q", tn.id, got[i], i, nodes[0].id, want[i])
			}
		}
	}
}

// confChange gets cc committed, re-proposing it on the current leader
// until every node in appliedOn has applied it.
func (c *testCluster) confChange(cc *raftpb.ConfChange, appliedOn ...*testNode) {
	c.t.Helper()
	waitFor(c.t, testWait, fmt.Sprintf("conf change %v %d applied", cc.GetType(), cc.GetNodeId()), func() bool {
		done := true
		for _, tn := range appliedOn {
			if !tn.confApplied(cc) {
				done = false
			}
		}
		if done {
			return true
		}
		lead := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = lead.node.ProposeConfChange(ctx, cc)
		return waitUntil(time.Second, func() bool {
			for _, tn := range appliedOn {
				if !tn.confApplied(cc) {
					return false
				}
			}
			return true
		})
	})
}

// confApplied reports whether the node's configuration reflects cc.
func (tn *testNode) confApplied(cc *raftpb.ConfChange) bool {
	tn.mu.Lock()
	cs := tn.confState
	tn.mu.Unlock()
	in := slices.Contains(cs.GetVoters(), cc.GetNodeId()) || slices.Contains(cs.GetLearners(), cc.GetNodeId())
	if cc.GetType() == raftpb.ConfChangeRemoveNode {
		return cs != nil && !in
	}
	return in
}
