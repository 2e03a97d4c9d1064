package main

import (
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/node"
)

// savingStorage wraps the node's durable storage and counts what the Ready
// loop asks of it, so the report can say how much of the loop is spent in
// fsync and how many of those fsyncs Raft did not require (raft.MustSync is
// false when only the commit index moved). It changes no behaviour: both
// transports run through it.
type savingStorage struct {
	node.Storage
	// deferCommit is an experiment (--exp-defer-commit-sync), not raftbus
	// behaviour: a Save that only moves the commit index (raft.MustSync is
	// false) is not written at all but carried into the next Save. It
	// approximates the proposed raftstore/node change "do not fsync a hard
	// state that only advances the commit index" (what etcd does), to
	// measure its effect; a crash may forget a commit index, which Raft
	// tolerates, as it does in etcd.
	deferCommit bool

	mu      sync.Mutex
	prev    *raftpb.HardState
	pending *raftpb.HardState // deferred commit-only hard state
	stats   saveStats
}

// saveStats are the counters of a savingStorage.
type saveStats struct {
	// Saves is the number of Save calls that wrote something.
	Saves uint64 `json:"saves"`
	// Entries is the number of entries written.
	Entries uint64 `json:"entries"`
	// HardStateOnly counts saves without entries (commit index or vote).
	HardStateOnly uint64 `json:"hard_state_only"`
	// NotRequired counts saves for which raft.MustSync is false: Raft does
	// not need them fsynced (only the commit index changed).
	NotRequired uint64 `json:"sync_not_required"`
	// SaveNanos is the time spent in Save; NotRequiredNanos the part spent
	// in saves that raft.MustSync says need no fsync.
	SaveNanos        int64 `json:"save_nanos"`
	NotRequiredNanos int64 `json:"sync_not_required_nanos"`
	// Deferred counts commit-only saves skipped by --exp-defer-commit-sync.
	Deferred uint64 `json:"deferred,omitempty"`
}

func (s *savingStorage) Save(hs *raftpb.HardState, entries []*raftpb.Entry) error {
	if len(entries) == 0 && raft.IsEmptyHardState(hs) {
		return s.Storage.Save(hs, entries)
	}
	// Only the Ready loop calls Save, so reading prev and pending here
	// races with nothing but snapshotStats, which takes the lock.
	s.mu.Lock()
	prev := s.prev
	if prev == nil {
		prev = &raftpb.HardState{}
	}
	cur := hs
	if raft.IsEmptyHardState(cur) {
		cur = prev
	}
	if s.deferCommit && len(entries) == 0 && !raft.MustSync(cur, prev, 0) {
		s.pending = proto.Clone(hs).(*raftpb.HardState)
		s.prev = s.pending
		s.stats.Deferred++
		s.mu.Unlock()
		return nil
	}
	save := hs
	if s.pending != nil && raft.IsEmptyHardState(hs) {
		save = s.pending
	}
	s.pending = nil
	s.mu.Unlock()

	start := time.Now()
	err := s.Storage.Save(save, entries)
	took := time.Since(start).Nanoseconds()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Saves++
	s.stats.Entries += uint64(len(entries))
	s.stats.SaveNanos += took
	if len(entries) == 0 {
		s.stats.HardStateOnly++
	}
	if !raft.MustSync(cur, prev, len(entries)) {
		s.stats.NotRequired++
		s.stats.NotRequiredNanos += took
	}
	if !raft.IsEmptyHardState(hs) {
		s.prev = proto.Clone(hs).(*raftpb.HardState)
	}
	return err
}

func (s *savingStorage) snapshotStats() saveStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// minus returns s - o, for counters sampled at the two edges of a window.
func (s *saveStats) minus(o *saveStats) *saveStats {
	return &saveStats{
		Saves: s.Saves - o.Saves, Entries: s.Entries - o.Entries, HardStateOnly: s.HardStateOnly - o.HardStateOnly,
		NotRequired: s.NotRequired - o.NotRequired, SaveNanos: s.SaveNanos - o.SaveNanos,
		NotRequiredNanos: s.NotRequiredNanos - o.NotRequiredNanos, Deferred: s.Deferred - o.Deferred,
	}
}

// SaveCommit passes the node's commit-only saves (node.CommitSaver: no
// fsync) through to the storage, counting them like the others.
func (s *savingStorage) SaveCommit(hs *raftpb.HardState) error {
	cs, ok := s.Storage.(node.CommitSaver)
	if !ok || s.deferCommit {
		return s.Save(hs, nil)
	}
	start := time.Now()
	err := cs.SaveCommit(hs)
	took := time.Since(start).Nanoseconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Saves++
	s.stats.HardStateOnly++
	s.stats.SaveNanos += took
	s.stats.NotRequired++
	s.stats.NotRequiredNanos += took
	s.prev = proto.Clone(hs).(*raftpb.HardState)
	return err
}
