package raftstore

import (
	"fmt"
	"io"
	"log"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestCrashBetweenApplySnapshotAndSaveRestarts is the regression test for
// issue 8, item 3: a power loss right after ApplySnapshot returned, before
// the Ready's Save, left a hard state with commit 5 and a log truncated at
// 20, and raft.RestartNode panicked ("state.commit 5 is out of range [20,
// 20]") on every start.
func TestCrashBetweenApplySnapshotAndSaveRestarts(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s, err := Open("/store", Options{fs: mem, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(1, 1, 5), ents(1, 5, 1))
	snap := &raftpb.Snapshot{
		Data: []byte("leader state at 20"),
		Metadata: &raftpb.SnapshotMetadata{
			Index: new(uint64(20)), Term: new(uint64(2)),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
		},
	}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	// Power loss now: only what was fsynced survives.
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	_ = s.Close()

	s = openT(t, "/store", Options{fs: crashed, Logger: nopLogger()})
	if err := checkRaftRestarts(s); err != nil {
		t.Fatal(err)
	}
	hs, _, _ := s.InitialState()
	if hs.GetCommit() != 20 || hs.GetTerm() != 2 || hs.GetVote() != 0 {
		t.Fatalf("hard state after the crash = %v, want term 2, no vote, commit 20", hs)
	}
}

// TestOpenRepairsCommitBehindTruncation opens a store written by the old
// code after that crash (commit below the truncation point) and requires
// that Raft can restart on it.
func TestOpenRepairsCommitBehindTruncation(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(2, 1, 5), ents(1, 5, 1))
	snap := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: new(uint64(20)), Term: new(uint64(2)),
		ConfState: &raftpb.ConfState{Voters: []uint64{1}},
	}}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What the old ApplySnapshot left on disk: the hard state untouched.
	db := rawDB(t, dir)
	v, _ := proto.Marshal(hardState(2, 1, 5))
	if err := db.Set(keyHardState, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir, Options{NoSync: true})
	if err := checkRaftRestarts(s); err != nil {
		t.Fatal(err)
	}
	// Term and vote are kept: the term already covers the snapshot's.
	if hs, _, _ := s.InitialState(); !proto.Equal(hs, hardState(2, 1, 20)) {
		t.Fatalf("hard state = %v, want term 2, vote 1, commit 20", hs)
	}
}

// checkRaftRestarts builds a Raft node on s as raft.RestartNode does
// (raft.NewRawNode runs the same checks, without a goroutine) and returns
// an error if Raft refuses the stored state, which it does by panicking.
func checkRaftRestarts(s *Store) (err error) {
	hs, _, err := s.InitialState()
	if err != nil {
		return err
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if hs != nil && (hs.GetCommit() < first-1 || hs.GetCommit() > last) {
		err = fmt.Errorf("hard state commit %d outside [FirstIndex-1, LastIndex] = [%d, %d]", hs.GetCommit(), first-1, last)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("raft refuses to restart on the store: %v (%v)", r, err)
		}
	}()
	if _, rerr := raft.NewRawNode(&raft.Config{
		ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: s,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16,
		Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	}); rerr != nil && err == nil {
		err = fmt.Errorf("raft.NewRawNode: %w", rerr)
	}
	return err
}
