package raftbridge

import (
	"errors"
	"io"
)

// SnapshotStore keeps snapshot data outside of memory, so that a snapshot
// is streamed chunk by chunk between the store and the bus instead of
// travelling whole in raftpb.Snapshot.Data (Config.SnapshotStore).
//
// With a store, the Snapshot.Data of every MsgSnap is a small reference
// that the store understands, not the data: the application puts a
// reference it got from the store (for FileSnapshotStore, from Save) in the
// snapshots its raft.Storage returns, and the MsgSnap handed to the
// receiving node carries the reference its store returned from
// SnapshotSink.Commit. The store is called from the bridge's snapshot
// goroutines (several at once) and must be safe for concurrent use.
type SnapshotStore interface {
	// Open resolves the reference in an outgoing MsgSnap to the data it
	// stands for. The bridge reads the source chunk by chunk with ReadAt,
	// re-reading a range when the receiver asks for a resend, and closes
	// it when the transfer ends. A reference the store does not understand
	// must yield an error, never a panic.
	Open(ref []byte) (SnapshotSource, error)
	// Create starts receiving the snapshot described by t. The bridge
	// writes its data to the sink strictly in order, exactly t.Size bytes
	// in all, and then calls Commit once, or calls Abort at any point
	// instead (checksum mismatch, abandoned, expired or superseded
	// transfer, closing bridge). An error refuses the transfer: the
	// sender hears "failed" and Raft retries later.
	Create(t SnapshotTransfer) (SnapshotSink, error)
	// Remove deletes the snapshot a reference names. The bridge removes a
	// received snapshot the node refused (ReceiveSnapshot or Process
	// returned an error); every other snapshot is the application's to
	// remove once no storage refers to it. A store must never delete a
	// complete snapshot by itself: an incoming transfer, from whichever
	// member, must not be able to take away the snapshot the node's own
	// storage stands on.
	Remove(ref []byte) error
}

// SnapshotTransfer describes an incoming snapshot to SnapshotStore.Create.
// The numbers come from a validated member but are claims until the data
// has arrived and its checksum matched.
type SnapshotTransfer struct {
	// From is the sender's Raft ID.
	From uint64
	// Term and Index are the snapshot's.
	Term, Index uint64
	// Size is the length of the data, at most Config.MaxSnapshotBytes.
	Size int64
}

// SnapshotSource is the data of an outgoing snapshot.
type SnapshotSource interface {
	io.ReaderAt
	io.Closer
	// Size is the length of the data in bytes.
	Size() int64
	// CRC32C is the CRC-32C (Castagnoli) of the whole data, which every
	// chunk carries and the receiver verifies; the store records it with
	// the data so that a transfer does not need a pass of its own over the
	// data to compute it.
	CRC32C() uint32
}

// SnapshotSink receives the data of an incoming snapshot.
type SnapshotSink interface {
	io.Writer
	// Commit makes the data durable (fsync) and complete, closes the sink
	// and returns the reference that the MsgSnap handed to the node
	// carries as its Snapshot.Data. The bridge calls it only after all
	// Size bytes were written and their CRC-32C matched.
	Commit() (ref []byte, err error)
	// Abort discards the data written so far (removing any partial file)
	// and closes the sink. It is safe to call after a failed Commit.
	Abort() error
}

// Errors of FileSnapshotStore.
var (
	// ErrSnapshotReference is wrapped for a reference that does not parse,
	// has an unknown version or does not name a snapshot in the store.
	ErrSnapshotReference = errors.New("raftbridge: invalid snapshot reference")
	// ErrSnapshotStoreFull is wrapped by Create when the store already
	// holds its maximum number of partial or complete snapshots.
	ErrSnapshotStoreFull = errors.New("raftbridge: snapshot store full")
	// ErrSnapshotSize is wrapped when data is longer or shorter than the
	// size it was announced with, or beyond the store's maximum.
	ErrSnapshotSize = errors.New("raftbridge: snapshot size")
)
