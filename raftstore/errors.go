package raftstore

import "errors"

// Errors returned by the store. Callers match them with errors.Is.
//
// The raft.Storage errors (raft.ErrCompacted, raft.ErrUnavailable,
// raft.ErrSnapOutOfDate) are returned unwrapped, exactly as MemoryStorage
// returns them, because the raft package compares them with ==.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("raftstore: closed")
	// ErrCorrupt is returned when stored data fails a consistency check: a
	// record that does not decode, a checksum mismatch, a hole in the log, a
	// missing snapshot file. The store cannot be used safely; a node should
	// stop and be rebuilt from its peers.
	ErrCorrupt = errors.New("raftstore: corrupt data")
	// ErrUnsupportedFormat is returned by Open for a store written with a
	// format version this code does not know.
	ErrUnsupportedFormat = errors.New("raftstore: unsupported format version")
	// ErrOutOfRange is returned where MemoryStorage would panic: an index past
	// the end of the log (Entries hi > LastIndex()+1, CreateSnapshot or
	// Compact beyond LastIndex), lo > hi, or a Save whose entries are not
	// contiguous or would leave a hole after the last index.
	ErrOutOfRange = errors.New("raftstore: index out of range")
	// ErrCompactBeyondSnapshot is returned by Compact for an index above the
	// latest snapshot: compacting there would lose entries that no durable
	// snapshot covers.
	ErrCompactBeyondSnapshot = errors.New("raftstore: compaction beyond the latest snapshot")
	// ErrFailed wraps the first write error (a failed commit, fsync or
	// snapshot file write, including a full disk). After a failed fsync the
	// state of the OS page cache, and so of the disk, is unknown (retrying
	// the fsync can report success for data that was dropped), and the
	// in-memory view may disagree with the disk. So the error is sticky:
	// every later call, read or write, returns it. The node must stop;
	// reopening the store recovers what is durable.
	ErrFailed = errors.New("raftstore: storage failed, the node must stop")
)
