package node

import (
	"fmt"

	"go.etcd.io/raft/v3/confchange"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/raftbridge"
)

// checkInbound refuses network messages that etcd raft (v3.7) would panic
// on. The bridge has already checked who sent them; this checks what they
// claim, so that one forged or corrupted message cannot crash the node:
//
//   - MsgHeartbeat with a Commit above this node's last stored index:
//     raftLog.commitTo panics ("tocommit(...) is out of range"). A correct
//     leader sends min(its commit, the follower's Match) (raft.go
//     sendHeartbeat), and a follower acknowledges an index (its Match) only
//     after the entries are in storage (contract 1: persist before send), so
//     a legitimate heartbeat never exceeds Storage.LastIndex. Storage only
//     grows while a term lasts, so reading it before Raft steps the message
//     is conservative.
//
//   - MsgApp whose entries do not follow Index contiguously with terms
//     between LogTerm and the message's Term: raftLog.maybeAppend takes the
//     entries' own indexes at face value and panics on a "conflict with
//     committed entry" or an out-of-range commit.
//
//   - MsgProp with no entries ("stepped empty MsgProp"), or with a
//     membership change entry that does not unmarshal (stepLeader panics).
//
//   - MsgSnap whose ConfState Raft cannot restore as it is (a learner that
//     is also a voter, say): raft.restore panics ("unable to restore
//     config", "ConfStates not equivalent").
//     Snapshots normally arrive through ReceiveSnapshot, which checks the
//     same.
//
// Messages breaking Raft's own invariants this way are not the bridge's
// concern: it checks identities, not contents.
func (n *Node) checkInbound(m *raftpb.Message) error {
	switch m.GetType() {
	case raftpb.MsgHeartbeat:
		last, err := n.cfg.Storage.LastIndex()
		if err != nil {
			return fmt.Errorf("node: read last index: %w", err)
		}
		if m.GetCommit() > last {
			return fmt.Errorf("%w: heartbeat from %s commits %d beyond the last stored index %d", ErrInvalidMessage, raftbridge.ID(m.GetFrom()).String(), m.GetCommit(), last)
		}
	case raftpb.MsgApp:
		prevTerm := m.GetLogTerm()
		for i, e := range m.GetEntries() {
			if e.GetIndex() != m.GetIndex()+uint64(i)+1 || e.GetTerm() < prevTerm || e.GetTerm() > m.GetTerm() {
				return fmt.Errorf("%w: append from %s: entry %d (index %d, term %d) does not follow index %d, log term %d, term %d",
					ErrInvalidMessage, raftbridge.ID(m.GetFrom()).String(), i, e.GetIndex(), e.GetTerm(), m.GetIndex(), m.GetLogTerm(), m.GetTerm())
			}
			prevTerm = e.GetTerm()
		}
	case raftpb.MsgSnap:
		return checkSnapshot(m)
	case raftpb.MsgProp:
		if len(m.GetEntries()) == 0 {
			return fmt.Errorf("%w: empty proposal from %s", ErrInvalidMessage, raftbridge.ID(m.GetFrom()).String())
		}
		for _, e := range m.GetEntries() {
			var err error
			switch e.GetType() {
			case raftpb.EntryConfChange:
				err = proto.Unmarshal(e.GetData(), &raftpb.ConfChange{})
			case raftpb.EntryConfChangeV2:
				err = proto.Unmarshal(e.GetData(), &raftpb.ConfChangeV2{})
			}
			if err != nil {
				return fmt.Errorf("%w: proposal from %s carries an undecodable membership change: %v", ErrInvalidMessage, raftbridge.ID(m.GetFrom()).String(), err)
			}
		}
	}
	return nil
}

// checkSnapshot refuses a snapshot whose ConfState Raft would panic on, by
// restoring it into a scratch tracker first, as raft.restore will.
func checkSnapshot(m *raftpb.Message) error {
	md := m.GetSnapshot().GetMetadata()
	if md.GetConfState() == nil {
		return nil // Raft ignores a snapshot that does not name it
	}
	chg := confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0), LastIndex: md.GetIndex()}
	cfg, prs, err := confchange.Restore(chg, md.GetConfState())
	if err == nil {
		// raft.restore also asserts that the restored configuration is the
		// snapshot's (it is not when an ID is both voter and learner).
		trk := tracker.ProgressTracker{Config: cfg, Progress: prs}
		err = trk.ConfState().Equivalent(md.GetConfState())
	}
	if err != nil {
		return fmt.Errorf("%w: snapshot from %s at %d has an impossible membership: %v", ErrInvalidMessage, raftbridge.ID(m.GetFrom()).String(), md.GetIndex(), err)
	}
	return nil
}
