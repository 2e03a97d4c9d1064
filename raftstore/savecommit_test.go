package raftstore

import (
	"errors"
	"testing"
)

func TestSaveCommitRecordsOnlyCommitAdvances(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{Logger: nopLogger()})
	mustSave(t, s, hardState(2, 1, 3), ents(1, 5, 2))
	if err := s.SaveCommit(hardState(2, 1, 5)); err != nil {
		t.Fatal(err)
	}
	hs, _, _ := s.InitialState()
	if hs.GetCommit() != 5 {
		t.Fatalf("commit %d after SaveCommit, want 5", hs.GetCommit())
	}
	for _, bad := range [][3]uint64{{3, 1, 6}, {2, 2, 6}} {
		if err := s.SaveCommit(hardState(bad[0], bad[1], bad[2])); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("SaveCommit changing term/vote %v: %v, want ErrOutOfRange", bad, err)
		}
	}
	// Written (not fsynced) data is still read back after a clean reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{Logger: nopLogger()})
	hs, _, _ = s.InitialState()
	if hs.GetCommit() != 5 || hs.GetTerm() != 2 || hs.GetVote() != 1 {
		t.Fatalf("after reopen: %v", hs)
	}
}
