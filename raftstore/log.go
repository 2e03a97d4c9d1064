package raftstore

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Save makes a Ready's hard state and entries durable, atomically: one
// Pebble batch, committed with fsync unless Options.NoSync. Call it from the
// Ready loop before sending the Ready's messages.
//
// Entries follow MemoryStorage.Append: they must be contiguous; entries
// already compacted away are skipped; an entry at an index that is already
// in the log replaces it and every entry after it (the conflicting suffix).
// The first entry may not lie beyond LastIndex()+1 (ErrOutOfRange).
//
// A nil or empty (raft.IsEmptyHardState) hs leaves the saved hard state
// unchanged. The store keeps the entries in its cache; like Raft, neither
// the store nor the caller may mutate them afterwards.
func (s *Store) Save(hs *raftpb.HardState, entries []*raftpb.Entry) error {
	return s.save(hs, entries, s.writeOpts())
}

// SaveCommit records a hard state that differs from the saved one only in
// its commit index, without fsync: the Ready loop uses it when
// raft.MustSync says no sync is needed. After a crash the commit index may
// go back, which Raft tolerates (the leader tells it again, and every entry
// up to it was fsynced when it was appended); terms and votes, which must
// never go back, are only ever written by Save.
func (s *Store) SaveCommit(hs *raftpb.HardState) error {
	s.writeMu.Lock()
	prev := s.hardState
	s.writeMu.Unlock()
	if prev != nil && (hs.GetTerm() != prev.GetTerm() || hs.GetVote() != prev.GetVote()) {
		return fmt.Errorf("%w: SaveCommit changes term or vote (%d/%d -> %d/%d); use Save",
			ErrOutOfRange, prev.GetTerm(), prev.GetVote(), hs.GetTerm(), hs.GetVote())
	}
	return s.save(hs, nil, pebble.NoSync)
}

func (s *Store) save(hs *raftpb.HardState, entries []*raftpb.Entry, wo *pebble.WriteOptions) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].GetIndex() != entries[i-1].GetIndex()+1 {
			return fmt.Errorf("%w: entries not contiguous: index %d follows %d",
				ErrOutOfRange, entries[i].GetIndex(), entries[i-1].GetIndex())
		}
	}
	if len(entries) > 0 {
		first := s.trunc.index + 1
		lastNew := entries[len(entries)-1].GetIndex()
		switch {
		case lastNew < first:
			entries = nil // all compacted already
		case entries[0].GetIndex() < first:
			entries = entries[first-entries[0].GetIndex():]
		}
		if len(entries) > 0 && entries[0].GetIndex() > s.lastIndex+1 {
			return fmt.Errorf("%w: missing log entries: last index %d, append at %d",
				ErrOutOfRange, s.lastIndex, entries[0].GetIndex())
		}
	}
	saveHS := !raft.IsEmptyHardState(hs)
	if len(entries) == 0 && !saveHS {
		return nil
	}
	start := time.Now()

	b := s.db.NewBatch()
	defer b.Close()
	sizes := make([]int64, len(entries))
	var buf, key []byte
	var total int64
	for i, e := range entries {
		var err error
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], e); err != nil {
			return fmt.Errorf("raftstore: encode entry %d: %w", e.GetIndex(), err)
		}
		key = s.keys.appendLogKey(key[:0], e.GetIndex())
		_ = b.Set(key, buf, nil) // Set copies key and value into the batch
		sizes[i] = int64(len(buf))
		total += int64(len(buf))
	}
	newLast := s.lastIndex
	replacing := false
	if len(entries) > 0 {
		newLast = entries[len(entries)-1].GetIndex()
		replacing = entries[0].GetIndex() <= s.lastIndex
		if newLast < s.lastIndex {
			_ = b.DeleteRange(s.keys.logKey(newLast+1), s.keys.logKeyAfter(s.lastIndex), nil)
		}
	}
	var hsCopy *raftpb.HardState
	if saveHS {
		hsCopy = proto.Clone(hs).(*raftpb.HardState)
		v, err := proto.Marshal(hsCopy)
		if err != nil {
			return fmt.Errorf("raftstore: encode hard state: %w", err)
		}
		_ = b.Set(s.keys.hardState, v, nil)
	}

	update := func() {
		if len(entries) > 0 {
			s.lastIndex = newLast
			s.cache.put(entries, sizes)
		}
		if hsCopy != nil {
			s.hardState = hsCopy
		}
	}
	if replacing {
		// Readers must not see the old suffix in memory and the new one in
		// Pebble, so they wait for the commit.
		s.mu.Lock()
		err := s.commit(b, wo)
		if err == nil {
			update()
		}
		s.mu.Unlock()
		if err != nil {
			return s.fail(fmt.Errorf("commit: %w", err))
		}
	} else {
		if err := s.commit(b, wo); err != nil {
			return s.fail(fmt.Errorf("commit: %w", err))
		}
		s.mu.Lock()
		update()
		s.mu.Unlock()
	}
	s.metrics.saveDuration.Observe(time.Since(start).Seconds())
	s.metrics.savedEntries.Add(float64(len(entries)))
	s.metrics.savedBytes.Add(float64(total))
	return nil
}

// Entries implements raft.Storage: the entries in [lo, hi), at most maxSize
// encoded bytes but always at least one entry. It returns raft.ErrCompacted
// if lo <= the truncated index, raft.ErrUnavailable if the log is empty, and
// ErrOutOfRange where MemoryStorage panics (hi > LastIndex()+1 or lo > hi).
// The returned slice is freshly allocated; the entries must not be mutated.
func (s *Store) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if lo <= s.trunc.index {
		return nil, raft.ErrCompacted
	}
	if hi > s.lastIndex+1 || lo > hi {
		return nil, fmt.Errorf("%w: entries [%d, %d) with last index %d", ErrOutOfRange, lo, hi, s.lastIndex)
	}
	if s.lastIndex == s.trunc.index {
		return nil, raft.ErrUnavailable // only the dummy entry, as in MemoryStorage
	}
	if lo == hi {
		return []*raftpb.Entry{}, nil
	}

	var (
		out  []*raftpb.Entry
		size uint64
		next = lo
	)
	// full reports whether e no longer fits; the first entry always fits.
	full := func(n uint64) bool {
		size += n
		return len(out) > 0 && size > maxSize
	}
	if !s.cache.covers(lo) {
		s.metrics.cacheMisses.Inc()
		end := hi
		if !s.cache.empty() && s.cache.first() < end {
			end = s.cache.first()
		}
		var stop bool
		var err error
		out, size, stop, err = s.readLog(lo, end, maxSize)
		if err != nil || stop {
			return out, err
		}
		next = end
	} else {
		s.metrics.cacheHits.Inc()
	}
	for ; next < hi; next++ {
		// The cache ends at lastIndex, so it covers everything from its
		// first index up to hi.
		e := s.cache.get(next)
		if full(uint64(s.cache.sizes[next-s.cache.first()])) {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// readLog reads the entries in [lo, hi) from Pebble, stopping early (stop =
// true) once maxSize is exceeded. Call it with mu held.
func (s *Store) readLog(lo, hi, maxSize uint64) (out []*raftpb.Entry, size uint64, stop bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: s.keys.logKey(lo), UpperBound: s.keys.logKey(hi)})
	if err != nil {
		return nil, 0, false, fmt.Errorf("raftstore: iterate log: %w", err)
	}
	defer it.Close()
	if n := hi - lo; n <= 1024 {
		out = make([]*raftpb.Entry, 0, n)
	}
	want := lo
	for ok := it.First(); ok; ok = it.Next() {
		idx, err := s.keys.parseLogKey(it.Key())
		if err != nil {
			return nil, 0, false, err
		}
		if idx != want {
			return nil, 0, false, fmt.Errorf("%w: log entry %d is missing", ErrCorrupt, want)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, false, fmt.Errorf("raftstore: read entry %d: %w", idx, err)
		}
		size += uint64(len(v))
		if len(out) > 0 && size > maxSize {
			return out, size, true, nil
		}
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return nil, 0, false, fmt.Errorf("%w: entry %d: %w", ErrCorrupt, idx, err)
		}
		if e.GetIndex() != idx {
			return nil, 0, false, fmt.Errorf("%w: entry under key %d has index %d", ErrCorrupt, idx, e.GetIndex())
		}
		out = append(out, e)
		want++
	}
	if err := it.Error(); err != nil {
		return nil, 0, false, fmt.Errorf("raftstore: iterate log: %w", err)
	}
	if want != hi {
		return nil, 0, false, fmt.Errorf("%w: log entry %d is missing", ErrCorrupt, want)
	}
	return out, size, false, nil
}

// Term implements raft.Storage: the term of entry i for i in
// [FirstIndex()-1, LastIndex()]. It returns raft.ErrCompacted below that
// range and raft.ErrUnavailable above it.
func (s *Store) Term(i uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	return s.term(i)
}

// term is Term without the lock; call it with mu or writeMu held.
func (s *Store) term(i uint64) (uint64, error) {
	switch {
	case i < s.trunc.index:
		return 0, raft.ErrCompacted
	case i > s.lastIndex:
		return 0, raft.ErrUnavailable
	case i == s.trunc.index:
		return s.trunc.term, nil
	case s.cache.covers(i):
		s.metrics.cacheHits.Inc()
		return s.cache.get(i).GetTerm(), nil
	}
	s.metrics.cacheMisses.Inc()
	v, err := s.get(s.keys.logKey(i))
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, fmt.Errorf("%w: log entry %d is missing", ErrCorrupt, i)
	}
	return entryTerm(v)
}

// Compact discards the log up to and including compactIndex, which becomes
// the truncated index: FirstIndex() becomes compactIndex+1 and
// Term(compactIndex) stays answerable, exactly as MemoryStorage.Compact.
// compactIndex must not exceed the latest snapshot's index
// (ErrCompactBeyondSnapshot) nor LastIndex() (ErrOutOfRange); at or below the
// truncated index it returns raft.ErrCompacted.
//
// Compact is not fsynced on its own: losing it in a crash only leaves a
// longer log, and the next synced write (Save, a snapshot) makes it durable,
// since Pebble's WAL is written in order.
func (s *Store) Compact(compactIndex uint64) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	switch {
	case compactIndex <= s.trunc.index:
		return raft.ErrCompacted
	case compactIndex > s.lastIndex:
		return fmt.Errorf("%w: compact %d beyond last index %d", ErrOutOfRange, compactIndex, s.lastIndex)
	case compactIndex > s.snap.index:
		return fmt.Errorf("%w: compact %d, snapshot at %d", ErrCompactBeyondSnapshot, compactIndex, s.snap.index)
	}
	term, err := s.term(compactIndex)
	if err != nil {
		return err
	}
	next := truncatedState{index: compactIndex, term: term}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange(s.keys.logKey(s.trunc.index+1), s.keys.logKeyAfter(compactIndex), nil)
	_ = b.Set(s.keys.truncated, next.encode(), nil)

	s.mu.Lock()
	err = s.commit(b, pebble.NoSync)
	if err == nil {
		s.trunc = next
		s.cache.dropBefore(compactIndex + 1)
	}
	s.mu.Unlock()
	if err != nil {
		return s.fail(fmt.Errorf("commit compaction: %w", err))
	}
	return nil
}
