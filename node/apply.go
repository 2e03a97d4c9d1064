package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/raftbridge"
)

// Normal entries written by a node start with a one-byte tag. A proposal
// names its proposer's session and sequence number, so that it is applied
// at most once (doc.go, "Proposal sessions") and the proposer can be
// answered when it is applied:
//
//	0x03 | proposer Raft ID | session epoch | sequence number | state machine command
//
// (three uint64 BE). Entries tagged 0x02 are the node's own system commands
// (JSON), such as binding the cluster to its membership stream; the state
// machine never sees them:
//
//	0x02 | request ID (uint64 BE) | command
//
// Entries tagged 0x01 (0x01 | request ID | command) were written before
// proposal sessions existed; they are still applied, without the at-most-once
// check, so that old logs replay as they did.
const (
	entryTagProposal = 0x01
	entryTagSystem   = 0x02
	entryTagSession  = 0x03
)

const sessionHeader = 1 + 3*8

func encodeProposal(id, epoch, seq uint64, data []byte) []byte {
	out := make([]byte, sessionHeader, sessionHeader+len(data))
	out[0] = entryTagSession
	binary.BigEndian.PutUint64(out[1:], id)
	binary.BigEndian.PutUint64(out[9:], epoch)
	binary.BigEndian.PutUint64(out[17:], seq)
	return append(out, data...)
}

// proposal is a decoded session proposal.
type proposal struct {
	from, epoch, seq uint64
	cmd              []byte
}

func decodeProposal(b []byte) (proposal, bool) {
	if len(b) < sessionHeader || b[0] != entryTagSession {
		return proposal{}, false
	}
	return proposal{
		from:  binary.BigEndian.Uint64(b[1:9]),
		epoch: binary.BigEndian.Uint64(b[9:17]),
		seq:   binary.BigEndian.Uint64(b[17:25]),
		cmd:   b[sessionHeader:],
	}, true
}

func encodeTagged(tag byte, id uint64, data []byte) []byte {
	out := make([]byte, 9, 9+len(data))
	out[0] = tag
	binary.BigEndian.PutUint64(out[1:], id)
	return append(out, data...)
}

var errSnapshotDeferred = errors.New("node: snapshot deferred")

func decodeEntry(b []byte) (tag byte, id uint64, data []byte, err error) {
	if len(b) < 9 || (b[0] != entryTagProposal && b[0] != entryTagSystem) {
		return 0, 0, nil, errors.New("node: entry is not a raftbus proposal")
	}
	return b[0], binary.BigEndian.Uint64(b[1:9]), b[9:], nil
}

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return b, nil
}

// decodeConfChange returns the membership change an entry carries, if any.
func decodeConfChange(e *raftpb.Entry) (*raftpb.ConfChangeV2, *confContext, bool) {
	var cc *raftpb.ConfChangeV2
	switch e.GetType() {
	case raftpb.EntryConfChange:
		var v1 raftpb.ConfChange
		if proto.Unmarshal(e.GetData(), &v1) != nil {
			return nil, nil, false
		}
		cc = v1.AsV2()
	case raftpb.EntryConfChangeV2:
		cc = &raftpb.ConfChangeV2{}
		if proto.Unmarshal(e.GetData(), cc) != nil {
			return nil, nil, false
		}
	default:
		return nil, nil, false
	}
	var ctx *confContext
	if len(cc.GetContext()) > 0 {
		ctx = &confContext{}
		if json.Unmarshal(cc.GetContext(), ctx) != nil {
			ctx = nil
		}
	}
	return cc, ctx, true
}

// applier is the apply loop's state.
type applier struct {
	cs        *raftpb.ConfState // membership as applied
	snapIndex uint64            // index of the latest snapshot taken or restored
}

// runApply applies committed entries to the state machine, in order, and
// takes snapshots, periodically and on demand. It is the only goroutine
// that touches the state machine and the sessions table.
//
// After a failure of the state machine (a snapshot that cannot be restored,
// an Apply error wrapping ErrStateMachine) nothing more is applied and no
// proposer is answered from what is left: the state may be half restored.
// The loop then only drains the channel, so that the Ready loop never
// blocks on it, until the node has stopped.
func (n *Node) runApply(cs *raftpb.ConfState, snapIndex uint64) {
	defer n.loops.Done()
	a := &applier{cs: cs, snapIndex: snapIndex}
	for {
		select {
		case b, ok := <-n.applyc:
			if !ok {
				return
			}
			if err := n.applyBatch(a, b); err != nil {
				n.fail(fmt.Errorf("%w: %w", ErrStateMachine, err))
				for range n.applyc {
				}
				return
			}
		case <-n.snapReq:
			a.snapIndex, _ = n.snapshotOnDemand(n.applied.current(), a.snapIndex, a.cs)
		}
	}
}

// applyBatch restores the batch's snapshot, if any, then applies its
// entries. An error means the state machine can no longer be trusted.
func (n *Node) applyBatch(a *applier, b applyBatch) error {
	if b.snap != nil {
		idx := b.snap.GetMetadata().GetIndex()
		if idx > n.applied.current() {
			if err := n.restore(b.snap); err != nil {
				return fmt.Errorf("restore snapshot at %d: %w", idx, err)
			}
			a.cs, a.snapIndex = proto.Clone(b.snap.GetMetadata().GetConfState()).(*raftpb.ConfState), idx
			n.applied.advance(idx)
			n.log.Info("restored snapshot", "index", idx)
		}
	}
	last := n.applied.current()
	for _, e := range b.entries {
		if e.GetIndex() <= last {
			continue
		}
		c, err := n.applyEntry(e)
		if err != nil {
			return fmt.Errorf("apply entry %d: %w", e.GetIndex(), err)
		}
		if c != nil {
			a.cs = c
		}
		last = e.GetIndex()
	}
	n.applied.advance(last)
	n.metrics.applied.Set(float64(last))
	if last-a.snapIndex >= n.cfg.SnapshotEntries {
		if err := n.snapshot(last, a.cs); errors.Is(err, errSnapshotDeferred) {
			n.log.Debug("snapshot deferred", "index", last, "err", err)
		} else if err != nil {
			n.log.Warn("snapshot failed", "index", last, "err", err)
		} else {
			a.snapIndex = last
		}
	}
	return nil
}

// applyEntry applies one committed entry and answers its proposer. It
// returns the new ConfState when the entry was a membership change, and an
// error only when the state machine failed (ErrStateMachine).
func (n *Node) applyEntry(e *raftpb.Entry) (*raftpb.ConfState, error) {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			return nil, nil // a new leader's empty entry
		}
		if p, ok := decodeProposal(e.GetData()); ok {
			return nil, n.applyProposal(e.GetIndex(), p)
		}
		tag, id, cmd, err := decodeEntry(e.GetData())
		if err != nil {
			n.log.Warn("skipping undecodable entry", "index", e.GetIndex(), "err", err)
			return nil, nil
		}
		if tag == entryTagSystem {
			n.props.trigger(id, result{index: e.GetIndex(), err: n.applySystem(e.GetIndex(), cmd)})
			return nil, nil
		}
		return nil, n.applyCommand(e.GetIndex(), id, cmd)
	default:
		c := n.applyConfChange(e)
		n.confIndex.Store(max(n.confIndex.Load(), e.GetIndex()))
		return c, nil
	}
}

// applyProposal applies a session proposal unless its session already
// applied it (or can no longer tell).
func (n *Node) applyProposal(index uint64, p proposal) error {
	own := p.from == n.cfg.ID && p.epoch >= n.firstEpoch
	memberAt := func(id uint64) bool { return n.members.memberAt(id, index) }
	if err := n.sessions.admit(p.from, p.epoch, p.seq, memberAt); err != nil {
		n.metrics.duplicates.Inc()
		n.log.Debug("proposal not applied", "index", index, "proposer", raftbridge.ID(p.from).String(), "epoch", p.epoch, "seq", p.seq, "err", err)
		if own && errors.Is(err, errStaleSession) {
			n.bumpEpoch(n.sessions.maxEpoch(n.cfg.ID) + 1)
		}
		if own {
			n.props.trigger(p.seq, result{index: index, err: fmt.Errorf("%w: %w", ErrProposalDropped, err)})
		}
		return nil
	}
	if !own {
		// Keys of the pending-proposal map are this process's sequence
		// numbers; another session's must not answer them.
		return n.applyCommand(index, 0, p.cmd)
	}
	return n.applyCommand(index, p.seq, p.cmd)
}

// applyCommand hands a command to the state machine and its result to the
// waiting proposer (req 0: nobody here waits). An error wrapping
// ErrStateMachine is the state machine's own failure: it is returned, and
// the proposer is answered by the node's stop instead.
func (n *Node) applyCommand(index, req uint64, cmd []byte) error {
	v, err := n.cfg.StateMachine.Apply(index, cmd)
	if errors.Is(err, ErrStateMachine) {
		return err
	}
	n.metrics.commands.Inc()
	if req != 0 {
		n.props.trigger(req, result{index: index, value: v, err: err})
	}
	return nil
}

// bumpEpoch moves this process's session epoch to at least e: the table
// recorded a newer session for this Raft ID (the clock went backwards
// across a restart), and proposals from an older one would be refused.
func (n *Node) bumpEpoch(e uint64) {
	for {
		cur := n.epoch.Load()
		if cur >= e || n.epoch.CompareAndSwap(cur, e) {
			return
		}
	}
}

func (n *Node) applyConfChange(e *raftpb.Entry) *raftpb.ConfState {
	cc, ctx, ok := decodeConfChange(e)
	if !ok {
		// Undecodable on every node alike; Raft still needs its answer.
		n.log.Warn("undecodable membership change ignored", "index", e.GetIndex())
		return n.raft.ApplyConfChange(&raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(raft.None)}}})
	}
	if verdict := n.members.decide(e.GetIndex(), cc, ctx); verdict != nil {
		// Raft is told to ignore the change by zeroing its node IDs.
		noop := proto.Clone(cc).(*raftpb.ConfChangeV2)
		for _, ch := range noop.GetChanges() {
			ch.NodeId = proto.Uint64(raft.None)
		}
		cs := n.raft.ApplyConfChange(noop)
		if !errors.Is(verdict, errReplayedRejection) {
			n.log.Warn("membership change rejected", "index", e.GetIndex(), "err", verdict)
		}
		n.answerConf(ctx, e.GetIndex(), verdict)
		return cs
	}
	for _, ch := range cc.GetChanges() {
		n.log.Info("membership change applied", "index", e.GetIndex(), "type", ch.GetType().String(), "member", raftbridge.ID(ch.GetNodeId()).String())
	}
	cs := n.raft.ApplyConfChange(cc)
	n.answerConf(ctx, e.GetIndex(), nil)
	for _, ch := range cc.GetChanges() {
		if ch.GetType() == raftpb.ConfChangeRemoveNode && ch.GetNodeId() == n.cfg.ID {
			n.selfRemoved(fmt.Sprintf("the log, at index %d", e.GetIndex()))
		}
	}
	return cs
}

// selfRemoved stops a node that learned of its own removal, from its log or
// from the membership stream (never from a peer's drop).
func (n *Node) selfRemoved(source string) {
	if n.removed.Swap(true) {
		return
	}
	if n.cfg.Host != nil {
		// One group of many: the host's other groups go on.
		n.log.Warn("this node was removed from this Raft group, which stops here; the node's other groups go on (its Raft ID stays tombstoned in this group)",
			"learned_from", source, "incarnation", n.cfg.Incarnation)
	} else {
		n.log.Error("this node was removed from the cluster and stops now; wipe its data directory before this machine rejoins as a new member",
			"learned_from", source, "incarnation", n.cfg.Incarnation)
	}
	go n.Stop()
}

func (n *Node) answerConf(ctx *confContext, index uint64, err error) {
	if ctx != nil && ctx.Request != 0 {
		n.props.trigger(ctx.Request, result{index: index, err: err})
	}
}

// restore replaces membership, sessions table and state machine with a
// snapshot's.
func (n *Node) restore(snap *raftpb.Snapshot) error {
	img, sm, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return err
	}
	sessions, err := restoreSessions(img.sessions)
	if err != nil {
		return fmt.Errorf("node: restore sessions: %w", err)
	}
	if err := n.members.restore(img.members); err != nil {
		return fmt.Errorf("node: restore membership: %w", err)
	}
	n.sessions = sessions
	n.confIndex.Store(max(n.confIndex.Load(), snap.GetMetadata().GetIndex()))
	if err := n.cfg.StateMachine.Restore(sm); err != nil {
		return fmt.Errorf("node: restore state machine: %w", err)
	}
	return nil
}

// snapshot records the state at index (the applied index) and compacts the
// log behind it, timing it and counting failures (a deferral is not one).
func (n *Node) snapshot(index uint64, cs *raftpb.ConfState) error {
	start := time.Now()
	err := n.takeSnapshot(index, cs)
	switch {
	case err == nil:
		n.metrics.snapshotDuration.Observe(time.Since(start).Seconds())
	case !errors.Is(err, errSnapshotDeferred):
		n.metrics.snapshotFailures.Inc()
	}
	return err
}

func (n *Node) takeSnapshot(index uint64, cs *raftpb.ConfState) error {
	// At a restart the directory is primed with membership entries the
	// apply loop has not reached yet (New, primeMembership); an image taken
	// now would describe a later index. Wait until the loop has caught up.
	if v := max(n.primedTo, n.members.Version()); v > index {
		return fmt.Errorf("%w: membership is primed up to %d, applied %d", errSnapshotDeferred, v, index)
	}
	sm, err := n.cfg.StateMachine.Snapshot()
	if err != nil {
		return fmt.Errorf("state machine snapshot: %w", err)
	}
	data, err := encodeSnapshot(snapshotImage{members: n.members.image(), sessions: n.sessions.image()}, sm)
	if err != nil {
		return err
	}
	if _, err := n.cfg.Storage.CreateSnapshot(index, cs, data); err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil // a newer snapshot arrived from the leader meanwhile
		}
		return err
	}
	n.metrics.snapshots.Inc()
	if index > n.cfg.CompactionOverhead {
		if err := n.cfg.Storage.Compact(index - n.cfg.CompactionOverhead); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("compact: %w", err)
		}
	}
	n.log.Info("snapshot taken", "index", index, "bytes", len(data))
	return nil
}
