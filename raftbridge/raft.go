package raftbridge

import (
	"context"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft is what the bridge delivers to: the local Raft node, seen through the
// four calls a transport makes. It mirrors etcd rafthttp's Raft interface.
//
// Process is called from the bus's delivery goroutine for every message that
// passed validation; it must not block for long (a node typically enqueues
// the message for its Raft loop, or calls raft.Node.Step with ctx). The
// message is owned by the callee.
type Raft interface {
	Process(ctx context.Context, m *raftpb.Message) error
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}
