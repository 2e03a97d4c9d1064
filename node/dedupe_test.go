package node

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestSessionTableRules(t *testing.T) {
	tab := sessionTable{}
	members := map[uint64]bool{1: true, 2: true}
	isMember := func(id uint64) bool { return members[id] }
	admit := func(id, epoch, seq uint64) error { return tab.admit(id, epoch, seq, isMember) }
	for _, seq := range []uint64{10, 12, 11} { // reordered within the window
		if err := admit(1, 100, seq); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	for _, seq := range []uint64{10, 11, 12} {
		if err := admit(1, 100, seq); !errors.Is(err, errDuplicateProposal) {
			t.Fatalf("replayed seq %d: %v", seq, err)
		}
	}
	if err := admit(1, 100, 12+sessionWindow); err != nil {
		t.Fatal(err)
	}
	if err := admit(1, 100, 12); !errors.Is(err, errStaleProposal) {
		t.Fatalf("seq below the window: %v", err)
	}
	if err := admit(1, 100, 13); err != nil { // the oldest still inside the window
		t.Fatal(err)
	}
	// Sessions: up to sessionsPerID per Raft ID; the oldest is forgotten
	// and anything older than every kept one is refused.
	for e := uint64(101); e < 101+sessionsPerID; e++ {
		if err := admit(1, e, 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(tab[1]) != sessionsPerID || tab[1][0].Epoch != 101 {
		t.Fatalf("kept sessions %+v", tab[1])
	}
	if err := admit(1, 100, 99999); !errors.Is(err, errStaleSession) {
		t.Fatalf("forgotten session: %v", err)
	}
	if err := admit(2, 5, 1); err != nil { // other Raft IDs are independent
		t.Fatal(err)
	}
	members[2] = false
	if err := admit(2, 5, 2); !errors.Is(err, errNotMember) {
		t.Fatalf("removed proposer: %v", err)
	}
	if _, kept := tab[2]; kept {
		t.Fatal("a removed member's sessions are kept")
	}
	if err := admit(3, 5, 2); !errors.Is(err, errNotMember) {
		t.Fatalf("never a member: %v", err)
	}
	// The table survives a snapshot image.
	restored, err := restoreSessions(tab.image())
	if err != nil {
		t.Fatal(err)
	}
	if err := restored.admit(1, 104, 1, isMember); !errors.Is(err, errDuplicateProposal) {
		t.Fatalf("after restore: %v", err)
	}
}

func TestShiftLeft(t *testing.T) {
	for _, n := range []uint64{1, 63, 64, 65, 130, sessionWindow - 1, sessionWindow} {
		w := make([]uint64, sessionWindow/64)
		w[0] = 1
		shiftLeft(w, n)
		for i := range uint64(sessionWindow) {
			want := i == n
			if got := w[i/64]&(1<<(i%64)) != 0; got != want {
				t.Fatalf("shift %d: bit %d = %v", n, i, got)
			}
		}
	}
}

// Item 7 of issue 8: replaying a committed proposal (a duplicated or
// captured MsgProp: the very same entry bytes proposed again) must not
// apply it twice: the replay would revert the acknowledged later write.
// Also after a snapshot and a restart from it.
func TestReplayedProposalAppliedOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SnapshotEntries, c.CompactionOverhead = 8, 2 })
	h.bootstrap(1)
	l := h.elect(1)
	ctx := ctxT(t)
	idx, _, err := l.node.Propose(ctx, []byte("k=v1"))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := l.st.Entries(idx, idx+1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	captured := ents[0].GetData()
	if _, _, err := l.node.Propose(ctx, []byte("k=v2")); err != nil {
		t.Fatal(err)
	}
	replay := func(n *Node, sm *mapSM, round string) {
		t.Helper()
		// Once proposed again by the node, once as a duplicated MsgProp
		// arriving from the network.
		if err := n.raft.Propose(ctx, captured); err != nil {
			t.Fatal(err)
		}
		dup := &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(n.cfg.ID), To: proto.Uint64(n.cfg.ID),
			Entries: []*raftpb.Entry{{Data: captured}}}
		if err := n.Process(ctx, dup); err != nil {
			t.Fatal(err)
		}
		// Entries apply in order: once a later write is applied, so is the
		// replay.
		if _, _, err := n.Propose(ctx, fmt.Appendf(nil, "after=%s", round)); err != nil {
			t.Fatal(err)
		}
		if got := sm.get("k"); got != "v2" {
			t.Fatalf("%s: k = %q after a replay of k=v1: the acknowledged write k=v2 was reverted", round, got)
		}
	}
	replay(l.node, l.sm, "live")
	for i := range 10 { // past a snapshot and compaction
		if _, _, err := l.node.Propose(ctx, fmt.Appendf(nil, "fill%d=x", i)); err != nil {
			t.Fatal(err)
		}
	}
	snap, _ := l.st.Snapshot()
	if snap.GetMetadata().GetIndex() <= idx {
		t.Fatalf("no snapshot after the proposal (snapshot index %d, proposal %d)", snap.GetMetadata().GetIndex(), idx)
	}
	// Restart from the same storage: the new process has a new session;
	// the table comes back from the snapshot.
	m := l.m
	l.node.Halt()
	delete(h.nodes, uint64(m.ID))
	r := h.start(m, nil, l.st)
	h.elect(uint64(m.ID))
	replay(r.node, r.sm, "restarted")
	if c := r.sm.count(); c == 0 {
		t.Fatal("restarted node applied nothing")
	}
}

// A node whose session is older than every session the table keeps for its
// Raft ID (its clock went backwards across restarts) has its proposals
// refused as stale once, then moves above the newest recorded epoch.
func TestStaleSessionMovesOn(t *testing.T) {
	h := newHarness(t, nil)
	h.bootstrap(1)
	l := h.elect(1)
	ctx := ctxT(t)
	future := l.node.epoch.Load() + 1<<40
	for i := range uint64(sessionsPerID) {
		if err := l.node.raft.Propose(ctx, encodeProposal(1, future+i, 1, fmt.Appendf(nil, "s%d=x", i))); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := l.node.Propose(ctx, []byte("k=v"))
	if !errors.Is(err, ErrProposalDropped) || !errors.Is(err, errStaleSession) {
		t.Fatalf("proposal from a forgotten session: %v", err)
	}
	if got := l.node.epoch.Load(); got <= future+sessionsPerID-1 {
		t.Fatalf("epoch %d not moved above the newest recorded %d", got, future+sessionsPerID-1)
	}
	if _, _, err := l.node.Propose(ctx, []byte("k=v")); err != nil {
		t.Fatalf("retry after the epoch moved: %v", err)
	}
	if got := l.sm.get("k"); got != "v" {
		t.Fatalf("k = %q", got)
	}
}

// Snapshots written before proposal sessions (format version 1) still
// restore, with an empty sessions table.
func TestDecodeVersion1Snapshot(t *testing.T) {
	v1 := append([]byte("RBSN\x01\x00\x00\x00\x0f"), []byte(`{"version":7}  sm-bytes`)...)
	img, sm, err := decodeSnapshot(v1)
	if err != nil || img.members.Version != 7 || string(sm) != "sm-bytes" || len(img.sessions) != 0 {
		t.Fatalf("v1: %+v %q %v", img, sm, err)
	}
}
