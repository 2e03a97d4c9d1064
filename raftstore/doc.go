// Package raftstore is a durable raft.Storage for go.etcd.io/raft/v3 on
// Pebble, the way CockroachDB keeps its Raft log: log entries, the hard
// state and the log bounds in one Pebble keyspace, snapshot data in
// checksummed files beside it.
//
// # Contract
//
// *Store implements raft.Storage and mirrors raft.MemoryStorage read for
// read: the same results from InitialState, Entries (including maxSize:
// at least one entry, then whole entries while the encoded total stays
// within maxSize), Term (answerable from FirstIndex()-1 to LastIndex()),
// FirstIndex, LastIndex and Snapshot, and the same raft.ErrCompacted,
// raft.ErrUnavailable and raft.ErrSnapOutOfDate, returned unwrapped because
// the raft package compares them with ==. Where MemoryStorage panics (an
// index past the end of the log, a hole before appended entries) the store
// returns an error wrapping ErrOutOfRange instead. Compact refuses to go
// beyond the latest snapshot (ErrCompactBeyondSnapshot), since those entries
// would then exist nowhere.
//
// The write side replaces MemoryStorage's Append and SetHardState:
//
//   - Save(hs, entries) writes a Ready's hard state and entries in one
//     atomic batch (Append semantics: a conflicting suffix is replaced).
//   - ApplySnapshot(snap) installs a snapshot received from the leader and
//     discards the log it replaces.
//   - CreateSnapshot(i, cs, data) records a snapshot of the local state
//     machine; Compact(i) then discards the log it covers.
//
// All methods are safe for concurrent use; the mutating ones are serialised.
// Raft's reads are not blocked by the fsync of an append: only writes that
// replace or delete existing entries exclude readers while they commit.
//
// # In the Ready loop
//
// raft's doc.go requires the hard state and the entries to be durable
// before the Ready's messages are sent. With this store:
//
//	rd := <-n.Ready()
//	if !raft.IsEmptySnap(rd.Snapshot) {
//	    store.ApplySnapshot(rd.Snapshot) // before Save: entries follow it
//	}
//	store.Save(rd.HardState, rd.Entries) // durable when it returns
//	send(rd.Messages)
//	apply(rd.CommittedEntries)
//	n.Advance()
//
// An error from any of them means the node must stop: raft cannot go on
// without its log. After a failed write the store refuses all further work
// (ErrFailed) because its memory may no longer match the disk. Pebble itself
// treats some I/O failures (a failed WAL sync) as fatal; the store then
// logs and panics rather than keep running on a log it cannot trust, the
// only exception to "no panics" in this package.
//
// # Durability and fsync
//
// When Options.NoSync is false (the default):
//
//   - Save commits its batch through Pebble's write-ahead log with fsync;
//     when it returns, the entries and hard state survive a process crash
//     and a power failure. Concurrent syncs are grouped by Pebble.
//   - CreateSnapshot and ApplySnapshot write the data to a temporary file,
//     fsync it, rename it to its final name and fsync the directory, and
//     only then commit (with fsync) the record that points to it, so a
//     record never names data that is not durable. Older snapshot files are
//     deleted only after that commit. The newest Options.SnapshotsRetained
//     files are kept.
//   - Compact is committed without fsync: losing it in a crash only leaves
//     a longer log, and since Pebble's WAL is ordered, the next synced write
//     makes it durable too.
//
// With NoSync nothing is fsynced. A process crash still loses nothing (the
// kernel has the writes), but an OS crash or power loss can silently lose
// acknowledged entries, votes and snapshots. A Raft node that forgets a vote
// or an acknowledged entry can elect two leaders or lose committed data for
// the whole cluster, so NoSync is for tests and benchmarks only.
//
// # On disk
//
// The store directory holds db/ (Pebble) and snap/ (snapshot data). A
// format-version key guards the layout: Open fails with ErrUnsupportedFormat
// for a version it does not know, and with ErrCorrupt when stored records do
// not decode, the log does not start right after its truncation point, or
// the latest snapshot file is missing or fails its CRC32C. Open verifies the
// snapshot file's checksum by streaming it (constant memory); Snapshot
// verifies it again when it loads the data. Pebble locks db/, so one
// directory cannot be opened twice at once. A new store's database is
// created and initialised under a temporary name and renamed into place, so
// an existing database without a format version is reported as corrupt, not
// mistaken for a new one.
//
// What Open cannot detect: Pebble replays its write-ahead log up to the
// first unreadable record and treats the rest as a torn write. A log damaged
// after the fact therefore loses the writes in it (recent entries, the hard
// state, a snapshot record) without an error. Open keeps snapshot files
// newer than the recorded snapshot for that reason, instead of deleting them
// as leftovers; the next snapshot install removes them.
//
// Memory: the newest entries (Options.EntryCacheSize bytes) and the data of
// the latest snapshot, once Snapshot or CreateSnapshot/ApplySnapshot has
// touched it, are kept in memory; Pebble's block cache and memtables are
// sized by Options.
package raftstore
