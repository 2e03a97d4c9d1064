package raftstore

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Snapshot implements raft.Storage: the latest snapshot, with every metadata
// field present (raftpb.EnsureSnapshot). With no snapshot it returns an empty
// one, as MemoryStorage does.
//
// The data is read from its file (and its checksum verified) on the first
// call after Open, then kept in memory until a newer snapshot replaces it.
// Unlike MemoryStorage, the returned Data is shared, not copied, so that a
// 50 MiB snapshot is not duplicated each time Raft sends MsgSnap: callers
// must not modify it.
func (s *Store) Snapshot() (*raftpb.Snapshot, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	for attempt := 0; ; attempt++ {
		s.mu.RLock()
		rec, err := s.snap, s.usable()
		s.mu.RUnlock()
		if err != nil {
			return nil, err
		}
		data, err := s.snapshotData(rec)
		if err != nil {
			// A snapshot installed after we read rec may have pruned its file;
			// look again once before calling the store corrupt.
			if errors.Is(err, fs.ErrNotExist) && attempt == 0 {
				continue
			}
			return nil, err
		}
		return rec.snapshot(data)
	}
}

// snapshotData returns the data of rec, from the cache or its file. Call it
// with snapMu held.
func (s *Store) snapshotData(rec *snapRecord) ([]byte, error) {
	if rec.file == "" {
		return nil, nil
	}
	if s.snapDataOK && s.snapDataFile == rec.file {
		return s.snapData, nil
	}
	data, err := s.snaps.read(rec)
	if err != nil {
		return nil, err
	}
	s.snapData, s.snapDataFile, s.snapDataOK = data, rec.file, true
	return data, nil
}

// snapshot builds the raftpb.Snapshot described by r, carrying data.
func (r *snapRecord) snapshot(data []byte) (*raftpb.Snapshot, error) {
	cs, err := r.decodeConfState()
	if err != nil {
		return nil, err
	}
	return &raftpb.Snapshot{
		Data: data,
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: cs,
			Index:     new(r.index),
			Term:      new(r.term),
		},
	}, nil
}

// CreateSnapshot records a snapshot of the state machine at index i, which
// must be applied already (the store cannot check that) and lie in
// (latest snapshot index, LastIndex()]. cs is the conf state at i; nil keeps
// the previous snapshot's. The data is written to its own file and fsynced
// before the snapshot record is committed, so the record never points at
// data that is not durable. The same synced batch raises the stored commit
// index to at least i (an applied entry is committed), so the log can later
// be compacted up to i without leaving the commit index behind it. The store
// keeps data (do not modify it afterwards). The log is not compacted: call
// Compact.
//
// It returns raft.ErrSnapOutOfDate if i is not newer than the latest
// snapshot and ErrOutOfRange if i > LastIndex().
func (s *Store) CreateSnapshot(i uint64, cs *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if i <= s.snap.index {
		return nil, raft.ErrSnapOutOfDate
	}
	if i > s.lastIndex {
		return nil, fmt.Errorf("%w: snapshot %d beyond last index %d", ErrOutOfRange, i, s.lastIndex)
	}
	term, err := s.term(i)
	if err != nil {
		return nil, err
	}
	csBytes := s.snap.confState
	if cs != nil {
		if csBytes, err = proto.Marshal(cs); err != nil {
			return nil, fmt.Errorf("raftstore: encode conf state: %w", err)
		}
	}
	rec, err := s.writeSnapshot(i, term, csBytes, data)
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(s.keys.snapshot, rec.encode(), nil)
	hs, err := s.coverHardState(b, i, term)
	if err != nil {
		return nil, err
	}
	if err := s.commit(b, s.writeOpts()); err != nil {
		return nil, s.fail(fmt.Errorf("commit snapshot record: %w", err))
	}
	s.mu.Lock()
	s.snap = rec
	if hs != nil {
		s.hardState = hs
	}
	s.mu.Unlock()
	s.installed(rec, data)
	return rec.snapshot(data)
}

// ApplySnapshot installs a snapshot received from the leader: its data is
// made durable in a file, then one synced batch records it and discards the
// whole log, which restarts right after the snapshot (MemoryStorage
// semantics: even entries past the snapshot are dropped). The same batch
// raises the stored hard state just enough for the store to restart on its
// own: commit to at least the snapshot index (raft.RestartNode requires
// FirstIndex()-1 <= commit <= LastIndex()) and, if it is older, term to the
// snapshot's term with no vote. So a crash right after ApplySnapshot, before
// Save, leaves a store that restarts. Save the Ready's hard state and
// entries with Save after this call. It returns raft.ErrSnapOutOfDate if
// the snapshot is not newer than the latest one (a snapshot at index 0 is
// accepted while no snapshot exists, as when bootstrapping only a conf
// state).
func (s *Store) ApplySnapshot(snap *raftpb.Snapshot) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	md := snap.GetMetadata()
	index, term := md.GetIndex(), md.GetTerm()
	if s.snap.index != 0 && s.snap.index >= index {
		return raft.ErrSnapOutOfDate
	}
	csBytes, err := proto.Marshal(raftpb.EnsureConfState(proto.Clone(md.GetConfState()).(*raftpb.ConfState)))
	if err != nil {
		return fmt.Errorf("raftstore: encode conf state: %w", err)
	}
	data := snap.GetData()
	rec, err := s.writeSnapshot(index, term, csBytes, data)
	if err != nil {
		return err
	}
	trunc := truncatedState{index: index, term: term}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange(s.keys.logStart, s.keys.logEnd, nil)
	_ = b.Set(s.keys.truncated, trunc.encode(), nil)
	_ = b.Set(s.keys.snapshot, rec.encode(), nil)
	hs, err := s.coverHardState(b, index, term)
	if err != nil {
		return err
	}

	s.mu.Lock()
	err = s.commit(b, s.writeOpts())
	if err == nil {
		s.snap, s.trunc, s.lastIndex = rec, trunc, index
		if hs != nil {
			s.hardState = hs
		}
		s.cache.reset()
	}
	s.mu.Unlock()
	if err != nil {
		return s.fail(fmt.Errorf("commit applied snapshot: %w", err))
	}
	s.installed(rec, data)
	s.log.Info("applied snapshot", "index", index, "term", term, "bytes", len(data))
	return nil
}

// writeSnapshot writes the data file (if there is data) and returns the
// record to commit. A failure is fatal for the store, like a failed commit:
// after a failed fsync the file system's state is unknown. Call it with
// writeMu held.
func (s *Store) writeSnapshot(index, term uint64, confState, data []byte) (*snapRecord, error) {
	rec := &snapRecord{index: index, term: term}
	if len(data) > 0 {
		var err error
		if rec, err = s.snaps.write(index, term, data); err != nil {
			return nil, s.fail(err)
		}
	}
	rec.confState = confState
	return rec, nil
}

// installed runs after a snapshot record is durable: it caches the data and
// prunes snapshot files the store no longer needs. Call it with writeMu held.
func (s *Store) installed(rec *snapRecord, data []byte) {
	s.snapMu.Lock()
	s.snapData, s.snapDataFile, s.snapDataOK = data, rec.file, true
	s.snapMu.Unlock()
	s.metrics.snapshotBytes.Set(float64(rec.size))
	removed, err := s.snaps.prune(rec, s.opts.SnapshotsRetained, false)
	if err != nil {
		// Stale files waste space but do not affect correctness; Open
		// retries the cleanup.
		s.log.Warn("could not remove old snapshot files", "err", err)
	}
	if len(removed) > 0 {
		s.log.Debug("removed old snapshot files", "files", removed)
	}
}

// coverHardState adds to b the hard state a snapshot at (index, term)
// requires, if the saved one falls short (see coverSnapshot), and returns
// it, or nil if nothing changes. Call it with writeMu held.
func (s *Store) coverHardState(b *pebble.Batch, index, term uint64) (*raftpb.HardState, error) {
	hs := coverSnapshot(s.hardState, index, term)
	if hs == nil {
		return nil, nil
	}
	v, err := proto.Marshal(hs)
	if err != nil {
		return nil, fmt.Errorf("raftstore: encode hard state: %w", err)
	}
	_ = b.Set(s.keys.hardState, v, nil)
	return hs, nil
}

// coverSnapshot returns hs raised to cover a snapshot at (index, term), or
// nil if hs already does. Everything a snapshot covers is committed, so the
// commit index may rise to index; Raft refuses to restart with a commit
// index below the log's start. A term older than the snapshot's rises to it
// with no vote: this node cannot have voted in that term, because a vote is
// sent only after the hard state carrying it is durable, and that hard state
// would have the newer term.
func coverSnapshot(hs *raftpb.HardState, index, term uint64) *raftpb.HardState {
	if hs.GetCommit() >= index && hs.GetTerm() >= term {
		return nil
	}
	out := &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(hs.GetCommit())}
	if hs != nil {
		out = proto.Clone(hs).(*raftpb.HardState)
	}
	if out.GetCommit() < index {
		out.Commit = new(index)
	}
	if out.GetTerm() < term {
		out.Term, out.Vote = new(term), new(uint64(0))
	}
	return out
}
