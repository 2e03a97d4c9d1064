package node

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/raftbridge"
)

// Step-by-step regression tests for issue 8 on the pumped harness: the
// network delivers only what the test hands over, so the interleavings
// below happen every run, not when the wall clock happens to allow.

// from reports whether f was sent by hn to to.
func from(f membus.PendingFrame, hn, to *hnode) bool {
	return f.Src == hn.m.Incarnation && f.Dst == to.m.Incarnation
}

// carries reports whether any message of envs has type typ, and From
// (when from is not 0).
func carries(envs [][]*raftpb.Message, typ raftpb.MessageType, from uint64) bool {
	for _, env := range envs {
		for _, m := range env {
			if m.GetType() == typ && (from == 0 || m.GetFrom() == from) {
				return true
			}
		}
	}
	return false
}

// settle steps until every node has applied what the leader has.
func (h *harness) settle(l *hnode) {
	h.t.Helper()
	h.stepUntil(10*time.Second, nil, func() error {
		want := l.node.AppliedIndex()
		for _, hn := range h.nodes {
			if got := hn.node.AppliedIndex(); got < want {
				return fmt.Errorf("%s applied %d of %d", hn.m.Name, got, want)
			}
		}
		return nil
	})
}

// Item 7: a follower's MsgProp frame, captured on the wire and delivered
// twice (once now, once after a later write to the same key was
// acknowledged), is applied once: the replay must not revert the later
// write on any node, although Raft commits it a second time.
func TestPumpReplayedProposalFrameAppliedOnce(t *testing.T) {
	h := newPumpHarness(t, nil)
	h.bootstrap(3)
	l := h.elect(1)
	f2 := h.nodes[2]
	h.settle(l)
	ctx := ctxT(t)

	done := make(chan error, 1)
	go func() { _, _, err := f2.node.Propose(ctx, []byte("k=v1")); done <- err }()
	frame := h.waitHeld("with n2's MsgProp to n1", func(f membus.PendingFrame) bool {
		return from(f, f2, l) && carries(h.heldMessages(f), raftpb.MsgProp, 0)
	})
	var proposal []byte
	for _, env := range h.heldMessages(frame) {
		for _, m := range env {
			if m.GetType() == raftpb.MsgProp {
				proposal = m.GetEntries()[0].GetData()
			}
		}
	}
	if err := h.net.Duplicate(ctx, frame.ID); err != nil { // the original delivery
		t.Fatal(err)
	}
	// Keep the captured frame held while the cluster moves on.
	h.route = func(f membus.PendingFrame) verdict {
		if f.ID == frame.ID {
			return keep
		}
		return pass
	}
	if err := h.await("n2's proposal", func() error { return <-done }); err != nil {
		t.Fatal(err)
	}
	if err := h.await("the later write", func() error { _, _, err := l.node.Propose(ctx, []byte("k=v2")); return err }); err != nil {
		t.Fatal(err)
	}

	// The replay: the same frame again, then a marker write, and every
	// node applies up to the marker.
	if got, err := h.net.Deliver(ctx, frame.ID); err != nil || got != 1 {
		t.Fatalf("replaying the frame: %d, %v", got, err)
	}
	h.route = nil
	if err := h.await("the marker write", func() error { _, _, err := l.node.Propose(ctx, []byte("marker=1")); return err }); err != nil {
		t.Fatal(err)
	}
	h.settle(l)
	for _, hn := range h.nodes {
		if got := hn.sm.get("k"); got != "v2" {
			t.Errorf("%s: k = %q after the replayed k=v1: the acknowledged k=v2 was reverted", hn.m.Name, got)
		}
	}
	// The replay did reach the log: Raft committed the entry twice.
	ents, err := l.st.Entries(1, l.node.AppliedIndex()+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	for _, e := range ents {
		if bytes.Equal(e.GetData(), proposal) {
			copies++
		}
	}
	if copies != 2 {
		t.Fatalf("the proposal is in the leader's log %d times, want 2 (original and replay)", copies)
	}
}

// Item 6: etcd raft's followers forward a peer's MsgReadIndex to their
// leader keeping the peer's From (a forwarded MsgProp goes through the
// follower's proposal channel, which sets its own From). Here n3 still
// follows n2 (it heard nothing of n1's election), so its read and its
// proposal go to n2, which forwards both to n1, batched with its own
// replies. The leader must accept the envelope, every message in it:
// before the fix the bridge dropped such an envelope whole as
// "message_mismatch", taking the forwarded proposal (which Raft never
// retries) and n2's acknowledgements with it.
func TestPumpForwardedProposalAndReadIndexAccepted(t *testing.T) {
	h := newPumpHarness(t, nil)
	h.bootstrap(3)
	n1, n2, n3 := h.nodes[1], h.nodes[2], h.nodes[3]
	h.elect(2)
	h.settle(n2)
	ctx := ctxT(t)

	// Leadership moves to n1 while n3 hears nothing.
	isolated := func(f membus.PendingFrame) verdict {
		if f.Src == n3.m.Incarnation || f.Dst == n3.m.Incarnation {
			return lose
		}
		return pass
	}
	h.route = isolated
	n2.node.raft.TransferLeadership(ctx, 2, 1)
	h.stepUntil(10*time.Second, nil, func() error {
		if !n1.node.IsLeader() || n2.node.Leader() != 1 {
			return fmt.Errorf("n1 leads: %v, n2 sees %x", n1.node.IsLeader(), n2.node.Leader())
		}
		return nil
	})
	if got := n3.node.Leader(); got != 2 {
		t.Fatalf("n3 sees leader %x, want the stale 2", got)
	}

	// n3 proposes and reads through its stale leader; only n3 -> n2 flows.
	h.route = func(f membus.PendingFrame) verdict {
		if from(f, n3, n2) {
			return pass
		}
		return isolated(f)
	}
	propDone, readDone := make(chan error, 1), make(chan error, 1)
	go func() { _, _, err := n3.node.Propose(ctx, []byte("fwd=p")); propDone <- err }()
	go func() { readDone <- n3.node.ReadIndex(ctx) }()
	fwd := h.waitHeld("with n3's MsgReadIndex forwarded by n2 to n1", func(f membus.PendingFrame) bool {
		return from(f, n2, n1) && carries(h.heldMessages(f), raftpb.MsgReadIndex, 3)
	})
	for _, env := range h.heldMessages(fwd) {
		t.Logf("n2 -> n1 envelope of %d messages: %v", len(env), types(env))
	}

	// Everything flows again: the proposal commits, n3 catches up, and the
	// read (answered by n1 To n3) completes.
	h.route = nil
	if err := h.await("n3's forwarded proposal", func() error { return <-propDone }); err != nil {
		t.Fatal(err)
	}
	if err := h.await("n3's forwarded read", func() error { return <-readDone }); err != nil {
		t.Fatal(err)
	}
	h.settle(n1)
	for _, hn := range h.nodes {
		if got := hn.sm.get("fwd"); got != "p" {
			t.Errorf("%s: fwd = %q", hn.m.Name, got)
		}
		st := hn.node.TransportStats()
		for _, r := range []bus.DropReason{raftbridge.DropMessageMismatch, raftbridge.DropProcessFailed} {
			if got := st.Dropped[r]; got != 0 {
				t.Errorf("%s dropped %d messages as %s", hn.m.Name, got, r)
			}
		}
	}
}

func types(env []*raftpb.Message) []string {
	out := make([]string, len(env))
	for i, m := range env {
		out[i] = fmt.Sprintf("%s from %x", m.GetType(), m.GetFrom())
	}
	return out
}

// syncBuffer is a log sink the test reads while nodes write to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}

// Item 1, step by step: on a cluster that has snapshotted and compacted,
// n2 is removed and replaced by a new member (Raft ID 4) added after the
// last snapshot. The leader's stored snapshot does not name n4, so it must
// not be sent: the leader takes one on demand at its applied index, and
// n4 receives a snapshot whose ConfState covers it, restores it, catches
// up and serves a linearizable read. Before the fix n4 refused the stale
// snapshot ("not in the ConfState ... ignored snapshot") until the next
// periodic one, which on this idle cluster never comes.
func TestPumpSeedScenarioStepByStep(t *testing.T) {
	var logs syncBuffer
	h := newPumpHarness(t, func(c *Config) {
		c.SnapshotEntries, c.CompactionOverhead = 20, 5
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, logSink()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	h.bootstrap(3)
	l := h.elect(1)
	ctx := ctxT(t)
	err := h.await("60 writes", func() error {
		for i := range 60 {
			if _, _, err := l.node.Propose(ctx, fmt.Appendf(nil, "k%d=v%d", i, i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.settle(l)
	for _, hn := range h.nodes {
		if fi, _ := hn.node.FirstIndex(); fi < 20 {
			t.Fatalf("%s has not compacted: first index %d", hn.m.Name, fi)
		}
	}

	// Remove n2 and add its replacement, n4.
	if err := h.await("removing n2", func() error { _, err := l.node.RemoveMember(ctx, 2); return err }); err != nil {
		t.Fatal(err)
	}
	h.nodes[2].node.Halt()
	delete(h.nodes, 2)
	m4 := newMember(t, 4)
	var addIdx uint64
	if err := h.await("adding n4", func() error { var err error; addIdx, err = l.node.AddMember(ctx, m4); return err }); err != nil {
		t.Fatal(err)
	}
	if snap, _ := l.st.Snapshot(); snap.GetMetadata().GetIndex() >= addIdx {
		t.Fatalf("the leader's snapshot (%d) already covers the add (%d): not the seed scenario", snap.GetMetadata().GetIndex(), addIdx)
	}
	if fi, _ := l.node.FirstIndex(); fi <= 1 {
		t.Fatalf("leader log not compacted (first index %d): n4 could catch up from the log", fi)
	}
	n4 := h.startJoining(m4, nil, l.node.Members(), NewMemoryStorage())

	// Step until n4 has restored a snapshot, applied past the add, and the
	// leader has its acknowledgement.
	snapFrames := 0
	h.route = func(f membus.PendingFrame) verdict {
		if f.Dst == m4.Incarnation && f.Kind == bus.KindSnap {
			snapFrames++
		}
		return pass
	}
	h.stepUntil(10*time.Second, nil, func() error {
		if got := n4.node.AppliedIndex(); got < addIdx {
			return fmt.Errorf("n4 applied %d of %d", got, addIdx)
		}
		if got := l.node.TransportStats().SnapshotsSent; got[raftbridge.SnapshotSuccess] == 0 {
			return fmt.Errorf("no snapshot transfer acknowledged yet: %v", got)
		}
		return nil
	})
	snap, err := n4.st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if md := snap.GetMetadata(); md.GetIndex() < addIdx || !slices.Contains(md.GetConfState().GetVoters(), 4) {
		t.Fatalf("n4 restored snapshot at %d with %v; want one at or after the add (%d) that names it", md.GetIndex(), md.GetConfState(), addIdx)
	}
	for _, refused := range []string{"not in the ConfState"} {
		if logs.contains(refused) {
			t.Errorf("a node logged %q: a snapshot that does not cover n4 was sent", refused)
		}
	}
	st := l.node.TransportStats()
	if st.SnapshotsSent[raftbridge.SnapshotSuccess] == 0 || st.SnapshotsSent[raftbridge.SnapshotFailed] != 0 || st.SnapshotsSent[raftbridge.SnapshotTimeout] != 0 {
		t.Errorf("leader snapshot transfers: %v", st.SnapshotsSent)
	}
	if got := counterValue(l.node.metrics.snapshotsOnDemand); got < 1 {
		t.Errorf("snapshots on demand: %v", got)
	}

	h.route = nil
	if err := h.await("n4's linearizable read", func() error { return n4.node.ReadIndex(ctx) }); err != nil {
		t.Fatal(err)
	}
	if got := n4.sm.get("k59"); got != "v59" {
		t.Fatalf("n4 reads k59=%q after a linearizable read", got)
	}
	t.Logf("n4 caught up through %d snapshot frames; transfers %v, %.0f snapshots on demand",
		snapFrames, st.SnapshotsSent, counterValue(l.node.metrics.snapshotsOnDemand))
}

// logSink is where testLogger would write: stderr with RAFTBUS_TEST_LOG.
func logSink() io.Writer {
	if os.Getenv("RAFTBUS_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
