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
	// ErrFailed wraps the first write error. After a write fails the
	// in-memory view may disagree with the disk, so every later call returns
	// this error; reopen the store to recover.
	ErrFailed = errors.New("raftstore: store failed")
)
