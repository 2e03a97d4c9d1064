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
// without its log. After a failed write (a failed commit, fsync or snapshot
// file write, a full disk) the store refuses all further work, reads
// included, with an error wrapping ErrFailed ("raftstore: storage failed,
// the node must stop") and the cause: after a failed fsync the state of the
// page cache, and so of the disk, is unknown, and a retried fsync can report
// success for writes the kernel dropped (the lesson of PostgreSQL's
// "fsyncgate"; etcd and Pebble stop too). Pebble itself treats a failed WAL
// write or sync as fatal and calls its logger's Fatalf; the store turns
// that into the error of the Save (or snapshot) that hit it rather than a
// panic. A fatal error in one of Pebble's background goroutines (a flush
// that cannot record its result in the MANIFEST) cannot be returned to
// anyone and still panics: the only panic in this package.
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
//   - Compact and SaveCommit are committed without fsync: losing them in a
//     crash only leaves a longer log or an older commit index, and since
//     Pebble's WAL is ordered, the next synced write makes them durable too.
//   - Open fsyncs the store directory and its parent, so that a store
//     created by Open does not vanish with its acknowledged writes in a
//     power loss (Pebble fsyncs only its own directory).
//
// # Crash consistency
//
// Every method that changes the log commits exactly one Pebble batch, and a
// batch is atomic in a crash: after a power loss at any instant, Open finds
// the store as it was after some prefix of the calls made, never half of
// one, and no shorter than the last call that returned nil with fsync.
// What each batch holds:
//
//   - Save: the entries, the deletion of a replaced suffix, the hard state.
//   - ApplySnapshot: the snapshot record, the deletion of the whole log, the
//     new truncation point and, when the saved hard state falls short of
//     the snapshot, a hard state raised to cover it (commit at least the
//     snapshot index; an older term raised to the snapshot's, with no
//     vote). So a crash between ApplySnapshot and the Ready's Save leaves a
//     store that raft.RestartNode accepts (it requires FirstIndex()-1 <=
//     commit <= LastIndex()) instead of one that panics on every start.
//   - CreateSnapshot: the snapshot record and, likewise, the commit index
//     raised to the snapshot index (the snapshot covers applied, hence
//     committed, entries), so a later Compact never leaves the commit index
//     below the log.
//   - Compact: the deletion of the entries and the new truncation point;
//     it refuses to pass the snapshot, whose record was already fsynced.
//
// The snapshot data file is durable (file and directory fsynced) before
// the batch naming it commits. A crash before that commit leaves a
// temporary file or an unreferenced snapshot file: Open removes temporary
// files and ignores unreferenced ones (it keeps those newer than the
// record, see below), and the next snapshot install removes them. A
// store written by an older version after the ApplySnapshot crash above
// (commit below the truncation point) is repaired in memory by Open. The
// tests in powerloss_test.go check all of this by losing power (Pebble's
// vfs.NewCrashableMem) before every file-system operation of a workload.
//
// With NoSync nothing is fsynced. A process crash still loses nothing (the
// kernel has the writes), but an OS crash or power loss can silently lose
// acknowledged entries, votes and snapshots. A Raft node that forgets a vote
// or an acknowledged entry can elect two leaders or lose committed data for
// the whole cluster, so NoSync is for tests and benchmarks only.
//
// # Many Raft groups in one store
//
// A process that runs many Raft groups opens one Host per disk (OpenHost)
// and a *Store per group (Host.Group); each has the whole contract above,
// confined to its group. All groups share one Pebble database, so one
// write-ahead log, block cache and memtable: the synced commits of
// concurrent Saves of different groups are made durable by one WAL fsync
// (Pebble's commit pipeline groups them), which Host.Stats and the
// raftbus_raftstore_wal_fsyncs_total and
// raftbus_raftstore_synced_commits_total counters show. They also share a
// fate: a storage failure in any group fails every group of the Host with
// the same error, since the WAL and the disk are common and their state is
// unknown after it. Per-group metrics carry a "group" label; the WAL's are
// registered once. An idle group costs a few KiB of heap (its entry cache
// fills only with what it saves).
//
// Group 0 is the store of Open, byte for byte: Open is a Host of one group
// that closes with its store, so a directory written by Open is group 0 of
// a Host and the other way round. Every other group's keys carry the prefix
// 'g' + 8-byte big-endian group (keys.go), a byte no group-0 key starts
// with, so that no range deletion or scan of one group can reach another's
// keys; each group has its own format-version key. Group 0 exists in every
// database (it is created with it), so Host.Groups always lists it.
//
// # On disk
//
// The store directory holds db/ (Pebble) and snap/ (snapshot data, of
// group 0 in a Host); a Host adds groups/<g in 16 hex digits>/ for the
// snapshot data of each group g > 0, pruned only within the group. A
// format-version key per group guards the layout: Open (or Host.Group)
// fails with ErrUnsupportedFormat for a version it does not know, and with
// ErrCorrupt when stored records do not decode, the log does not start
// right after its truncation point, or the latest snapshot file is missing
// or fails its CRC32C. A group g > 0 that has keys but no format version is
// corrupt too, not new. Open verifies the
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
// Memory: the newest entries (Options.EntryCacheSize bytes per group) and
// the data of the latest snapshot, once Snapshot or
// CreateSnapshot/ApplySnapshot has touched it, are kept in memory; Pebble's
// block cache and memtables (one set per Host) are sized by Options.
package raftstore
