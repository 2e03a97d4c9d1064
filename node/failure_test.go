package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/internal/nodehook"
	"github.com/raftbus/raftbus/raftbridge"
)

// hookStorage is a MemoryStorage with hooks on the Ready loop's writes.
type hookStorage struct {
	*MemoryStorage
	mu     sync.Mutex
	onSave func()
}

func (s *hookStorage) Save(hs *raftpb.HardState, ents []*raftpb.Entry) error {
	s.mu.Lock()
	f := s.onSave
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return s.MemoryStorage.Save(hs, ents)
}

// follower starts node 2 of a cluster led by node 1, with empty storage
// and a transport that delivers nothing: the test steps the leader's
// messages in by hand.
func follower(t *testing.T, st Storage, sm StateMachine) (*Node, Member) {
	leader := newMember(t, 1)
	self := newMember(t, 2)
	n, err := New(Config{
		Cluster: uuid.New(), ID: 2, Incarnation: self.Incarnation,
		JoinMembers: []Member{leader}, Storage: st, StateMachine: sm,
		newTransport: func(nodehook.Peer) (nodehook.Transport, error) { return &fakeTransport{}, nil },
		Ticker:       newManualClock().ticker, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Halt)
	return n, leader
}

// leaderSnapshot is the MsgSnap leader 1 sends at term 1: a snapshot at
// index whose membership is {leader, self}.
func leaderSnapshot(t *testing.T, leader Member, selfID, index uint64, sm []byte) *raftpb.Message {
	ms := newMembership()
	for i, m := range []Member{leader, {ID: raftbridge.ID(selfID), Incarnation: uuid.New()}} {
		cc := change(raftpb.ConfChangeAddNode, uint64(m.ID))
		if err := ms.decide(uint64(i+1), cc, &confContext{Member: &m}); err != nil {
			t.Fatal(err)
		}
	}
	data, err := encodeSnapshot(snapshotImage{members: ms.image()}, sm)
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(uint64(leader.ID)), To: proto.Uint64(selfID), Term: proto.Uint64(1),
		Snapshot: &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(index), Term: proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: []uint64{uint64(leader.ID), selfID}},
		}},
	}
}

// Item 3 of issue 8: a received snapshot is reported durable (the sender's
// SnapshotFinish) only once the Ready that carries it is saved, never
// between ApplySnapshot and Save.
func TestSnapshotDurableOnlyAfterSave(t *testing.T) {
	st := &hookStorage{MemoryStorage: NewMemoryStorage()}
	n, leader := follower(t, st, newMapSM())
	var mu sync.Mutex
	var durableAtSave []uint64
	st.mu.Lock()
	st.onSave = func() {
		mu.Lock()
		durableAtSave = append(durableAtSave, n.durable.current())
		mu.Unlock()
	}
	st.mu.Unlock()
	if err := n.ReceiveSnapshot(ctxT(t), leaderSnapshot(t, leader, 2, 10, []byte("{}"))); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(durableAtSave) == 0 {
		t.Fatal("Save was not called for the snapshot's Ready")
	}
	if durableAtSave[0] >= 10 {
		t.Fatalf("snapshot at 10 reported durable (durable=%d) before its Ready was saved", durableAtSave[0])
	}
	if got := n.durable.current(); got < 10 {
		t.Fatalf("durable %d after ReceiveSnapshot returned", got)
	}
}

// Item 5 of issue 8: when a snapshot cannot be restored, the apply loop
// applies nothing more (not the batches already queued behind it), answers
// no proposer, and the node stops with ErrStateMachine.
func TestRestoreFailureStopsApplying(t *testing.T) {
	sm := newMapSM()
	n, leader := follower(t, NewMemoryStorage(), sm)
	restoreErr := errors.New("disk on fire")
	sm.restoreHook = func([]byte) error {
		// Fail only once the entries after the snapshot are queued behind
		// it, so that code which carries on would apply them.
		deadline := time.Now().Add(10 * time.Second)
		for len(n.applyc) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling a channel length; bounded
		}
		return restoreErr
	}
	// A proposal of this node's own session, waiting to be answered.
	seq := n.nextRequestID()
	answer := n.props.register(seq)
	if err := n.raft.Step(ctxT(t), leaderSnapshot(t, leader, 2, 10, []byte("{}"))); err != nil {
		t.Fatal(err)
	}
	app := &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(1),
		Index: proto.Uint64(10), LogTerm: proto.Uint64(1), Commit: proto.Uint64(12),
		Entries: []*raftpb.Entry{
			{Term: proto.Uint64(1), Index: proto.Uint64(11), Data: encodeProposal(2, n.firstEpoch, seq, []byte("a=1"))},
			{Term: proto.Uint64(1), Index: proto.Uint64(12), Data: encodeProposal(1, 1, 1, []byte("b=2"))},
		},
	}
	if err := n.Process(ctxT(t), app); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop after a failed restore")
	}
	if err := n.Err(); !errors.Is(err, ErrStateMachine) || !errors.Is(err, ErrStopped) || !errors.Is(err, restoreErr) {
		t.Fatalf("Err() = %v, want ErrStateMachine and ErrStopped wrapping the cause", err)
	}
	if c := sm.count(); c != 0 {
		t.Fatalf("%d entries applied after the failed restore", c)
	}
	select {
	case r := <-answer:
		t.Fatalf("proposer answered after the failed restore: %+v", r)
	default:
	}
	if _, _, err := n.Propose(context.Background(), []byte("c=3")); !errors.Is(err, ErrStateMachine) {
		t.Fatalf("Propose after the failure: %v, want ErrStateMachine", err)
	}
}

// An Apply error wrapping ErrStateMachine stops the node the same way; any
// other Apply error is the command's own and only goes to the proposer.
func TestApplyErrorPolicy(t *testing.T) {
	var sm *failingSM
	h := newHarness(t, func(c *Config) {
		sm = &failingSM{mapSM: c.StateMachine.(*mapSM)}
		c.StateMachine = sm
	})
	h.bootstrap(1)
	l := h.elect(1)
	ctx := ctxT(t)
	if _, _, err := l.node.Propose(ctx, []byte("no equals sign")); err == nil || errors.Is(err, ErrStopped) {
		t.Fatalf("bad command: %v, want the command's own error", err)
	}
	if _, _, err := l.node.Propose(ctx, []byte("k=v")); err != nil {
		t.Fatal(err)
	}
	sm.fail.Store(true)
	_, _, err := l.node.Propose(ctx, []byte("k=w"))
	if !errors.Is(err, ErrStateMachine) {
		t.Fatalf("Propose when the state machine fails: %v", err)
	}
	<-l.node.Done()
	if !errors.Is(l.node.Err(), ErrStateMachine) {
		t.Fatalf("Err() = %v", l.node.Err())
	}
	if got := l.sm.get("k"); got != "v" {
		t.Fatalf("k = %q", got)
	}
}

type atomicBool = atomic.Bool

type failingSM struct {
	*mapSM
	fail atomicBool
}

func (s *failingSM) Apply(i uint64, data []byte) (any, error) {
	if s.fail.Load() {
		return nil, fmt.Errorf("%w: corrupted", ErrStateMachine)
	}
	return s.mapSM.Apply(i, data)
}
