package node

import (
	"context"
	"errors"
	"log/slog"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Snapshots on demand.
//
// Raft sends a snapshot to a peer whose next entry was compacted away. The
// peer restores it only if the snapshot's ConfState names it ("attempted to
// restore snapshot but it is not in the ConfState ... ignored snapshot"),
// so a member added after the last snapshot can never catch up from it:
// with SnapshotEntries in the thousands it waits for the next periodic one,
// and on an idle cluster forever. raftStorage therefore hides a stored
// snapshot older than the last applied membership change: Raft gets
// ErrSnapshotTemporarilyUnavailable (it then simply does not send, and
// tries again on the peer's next heartbeat response), and the apply loop,
// which owns the state machine and the membership at the applied index, is
// asked to take a snapshot now.

// raftStorage is the Storage Raft reads through.
type raftStorage struct {
	Storage
	n *Node
}

// Snapshot implements raft.Storage. It is called from the Raft goroutine
// and never blocks.
func (s *raftStorage) Snapshot() (*raftpb.Snapshot, error) {
	snap, err := s.Storage.Snapshot()
	if err != nil {
		return snap, err
	}
	if snap.GetMetadata().GetIndex() < s.n.confIndex.Load() {
		s.n.requestSnapshot()
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return snap, nil
}

// requestSnapshot asks the apply loop for a snapshot at its applied index.
// Requests coalesce: at most one is pending.
func (n *Node) requestSnapshot() {
	select {
	case n.snapReq <- struct{}{}:
	default:
	}
}

// snapshotOnDemand takes the snapshot requested through raftStorage, if it
// is still needed: the stored one predates the last applied membership
// change. Called by the apply loop only.
func (n *Node) snapshotOnDemand(applied, snapIndex uint64, cs *raftpb.ConfState) (uint64, bool) {
	if snapIndex >= n.confIndex.Load() || applied <= snapIndex {
		return snapIndex, false
	}
	if err := n.snapshot(applied, cs); err != nil {
		// Raft asks again on the peer's next heartbeat response.
		level := slog.LevelWarn
		if errors.Is(err, errSnapshotDeferred) {
			level = slog.LevelDebug
		}
		n.log.Log(context.Background(), level, "snapshot on demand not taken", "index", applied, "err", err)
		return snapIndex, false
	}
	n.log.Info("snapshot taken on demand: a peer needs one that covers the current membership", "index", applied, "membership_change", n.confIndex.Load())
	n.metrics.snapshotsOnDemand.Inc()
	return applied, true
}
