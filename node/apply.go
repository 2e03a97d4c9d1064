package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Normal entries written by a node start with a one-byte tag and the
// proposer's request ID, so the proposer can be answered when the entry is
// applied:
//
//	0x01 | request ID (uint64 BE) | state machine command
//
// Entries tagged 0x02 are the node's own system commands (JSON), such as
// binding the cluster to its membership stream; the state machine never
// sees them.
const (
	entryTagProposal = 0x01
	entryTagSystem   = 0x02
)

func encodeEntry(id uint64, data []byte) []byte { return encodeTagged(entryTagProposal, id, data) }

func encodeTagged(tag byte, id uint64, data []byte) []byte {
	out := make([]byte, 9, 9+len(data))
	out[0] = tag
	binary.BigEndian.PutUint64(out[1:], id)
	return append(out, data...)
}

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

// runApply applies committed entries to the state machine, in order, and
// takes snapshots. It is the only goroutine that touches the state machine.
func (n *Node) runApply(cs *raftpb.ConfState, snapIndex uint64) {
	defer n.loops.Done()
	for b := range n.applyc {
		if b.snap != nil {
			idx := b.snap.GetMetadata().GetIndex()
			if idx > n.applied.current() {
				if err := n.restore(b.snap); err != nil {
					n.log.Error("cannot restore snapshot; stopping", "index", idx, "err", err)
					go n.Stop()
					continue
				}
				cs, snapIndex = proto.Clone(b.snap.GetMetadata().GetConfState()).(*raftpb.ConfState), idx
				n.applied.advance(idx)
				n.log.Info("restored snapshot", "index", idx)
			}
		}
		last := n.applied.current()
		for _, e := range b.entries {
			if e.GetIndex() <= last {
				continue
			}
			if c := n.applyEntry(e); c != nil {
				cs = c
			}
			last = e.GetIndex()
		}
		n.applied.advance(last)
		n.metrics.applied.Set(float64(last))
		if last-snapIndex >= n.cfg.SnapshotEntries {
			if err := n.snapshot(last, cs); err != nil {
				n.log.Warn("snapshot failed", "index", last, "err", err)
			} else {
				snapIndex = last
			}
		}
	}
}

// applyEntry applies one committed entry and answers its proposer. It
// returns the new ConfState when the entry was a membership change.
func (n *Node) applyEntry(e *raftpb.Entry) *raftpb.ConfState {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			return nil // a new leader's empty entry
		}
		tag, id, cmd, err := decodeEntry(e.GetData())
		if err != nil {
			n.log.Warn("skipping undecodable entry", "index", e.GetIndex(), "err", err)
			return nil
		}
		if tag == entryTagSystem {
			n.props.trigger(id, result{index: e.GetIndex(), err: n.applySystem(e.GetIndex(), cmd)})
			return nil
		}
		v, err := n.cfg.StateMachine.Apply(e.GetIndex(), cmd)
		n.metrics.appliedProposals.Inc()
		n.props.trigger(id, result{index: e.GetIndex(), value: v, err: err})
		return nil
	default:
		return n.applyConfChange(e)
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
		n.log.Info("membership change applied", "index", e.GetIndex(), "type", ch.GetType().String(), "member", HexID(ch.GetNodeId()))
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
	n.log.Error("this node was removed from the cluster and stops now; wipe its data directory before this machine rejoins as a new member",
		"learned_from", source, "incarnation", n.cfg.Incarnation)
	go n.Stop()
}

func (n *Node) answerConf(ctx *confContext, index uint64, err error) {
	if ctx != nil && ctx.Request != 0 {
		n.props.trigger(ctx.Request, result{index: index, err: err})
	}
}

// restore replaces membership and state machine with a snapshot's.
func (n *Node) restore(snap *raftpb.Snapshot) error {
	img, sm, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return err
	}
	if err := n.members.restore(img); err != nil {
		return fmt.Errorf("node: restore membership: %w", err)
	}
	if err := n.cfg.StateMachine.Restore(sm); err != nil {
		return fmt.Errorf("node: restore state machine: %w", err)
	}
	return nil
}

// snapshot records the state at index and compacts the log behind it.
func (n *Node) snapshot(index uint64, cs *raftpb.ConfState) error {
	sm, err := n.cfg.StateMachine.Snapshot()
	if err != nil {
		return fmt.Errorf("state machine snapshot: %w", err)
	}
	data, err := encodeSnapshot(n.members.image(), sm)
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
