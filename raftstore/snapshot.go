package raftstore

import (
	"errors"
	"fmt"
	"io/fs"

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
	data, err := readSnapFile(s.snapDir, rec)
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
// data that is not durable. The store keeps data (do not modify it
// afterwards). The log is not compacted: call Compact.
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
	_ = b.Set(keySnapshot, rec.encode(), nil)
	if err := b.Commit(s.writeOpts()); err != nil {
		return nil, s.fail(fmt.Errorf("commit snapshot record: %w", err))
	}
	s.mu.Lock()
	s.snap = rec
	s.mu.Unlock()
	s.installed(rec, data)
	return rec.snapshot(data)
}

// ApplySnapshot installs a snapshot received from the leader: its data is
// made durable in a file, then one synced batch records it and discards the
// whole log, which restarts right after the snapshot (MemoryStorage
// semantics: even entries past the snapshot are dropped). The hard state is
// not touched; save the Ready's hard state and entries with Save after this
// call. It returns raft.ErrSnapOutOfDate if the snapshot is not newer than
// the latest one (a snapshot at index 0 is accepted while no snapshot exists,
// as when bootstrapping only a conf state).
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
	_ = b.DeleteRange(logKey(0), logKeyEnd, nil)
	_ = b.Set(keyTruncated, trunc.encode(), nil)
	_ = b.Set(keySnapshot, rec.encode(), nil)

	s.mu.Lock()
	err = b.Commit(s.writeOpts())
	if err == nil {
		s.snap, s.trunc, s.lastIndex = rec, trunc, index
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
// record to commit. Call it with writeMu held.
func (s *Store) writeSnapshot(index, term uint64, confState, data []byte) (*snapRecord, error) {
	rec := &snapRecord{index: index, term: term}
	if len(data) > 0 {
		var err error
		if rec, err = writeSnapFile(s.snapDir, index, term, data, s.opts.NoSync); err != nil {
			return nil, err
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
	removed, err := pruneSnapFiles(s.snapDir, rec, s.opts.SnapshotsRetained, false)
	if err != nil {
		// Stale files waste space but do not affect correctness; Open
		// retries the cleanup.
		s.log.Warn("could not remove old snapshot files", "err", err)
	}
	if len(removed) > 0 {
		s.log.Debug("removed old snapshot files", "files", removed)
	}
}
