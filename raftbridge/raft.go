package raftbridge

import (
	"context"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft is what the bridge delivers to: the local Raft node, seen through the
// calls a transport makes. It mirrors etcd rafthttp's Raft interface.
//
// The bridge calls it from several goroutines (the bus's delivery goroutine,
// its report goroutine and its snapshot goroutines), so an implementation
// must be safe for concurrent use. It is never called from inside
// Bridge.Send, so an implementation may wait for the raft loop.
type Raft interface {
	// Process is called from the bus's delivery goroutine for every message
	// that passed validation; it must not block for long (a node typically
	// enqueues the message for its Raft loop, or calls raft.Node.Step with
	// ctx, whose deadline is Config.ProcessTimeout). The message is owned
	// by the callee. An error is counted as a drop ("process_failed").
	Process(ctx context.Context, m *raftpb.Message) error
	// ReportUnreachable tells Raft that a message to id was dropped.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells Raft how the snapshot sent to id ended. The
	// bridge calls it exactly once per MsgSnap handed to Send, except for a
	// MsgSnap superseded by a newer one to the same peer before it finished
	// and for those still in flight when the bridge closes.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// SnapshotReceiver is optionally implemented by a Raft that wants complete
// incoming snapshots handed over separately from other messages, so that it
// can persist the snapshot durably before stepping it into Raft.
//
// ReceiveSnapshot is called from a goroutine of its own with a MsgSnap whose
// Snapshot.Data holds the complete, checksum-verified data, or, with a
// Config.SnapshotStore, the store's reference to it (durable in the store
// by then); ctx expires after
// Config.SnapshotApplyTimeout. Only when it returns nil does the receiver
// acknowledge the transfer, and only that acknowledgement makes the sender
// report raft.SnapshotFinish; an error makes the sender report
// raft.SnapshotFailure. It must return when ctx is done (Close waits for
// it). Without this interface the MsgSnap goes to Process, with the same
// acknowledgement rule.
type SnapshotReceiver interface {
	ReceiveSnapshot(ctx context.Context, m *raftpb.Message) error
}
