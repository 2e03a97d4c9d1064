package raftstore

import (
	"log/slog"
	"testing"

	raftpb "go.etcd.io/raft/v3/raftpb"
)

// openT opens a store in dir and closes it at the end of the test.
func openT(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ent(index, term uint64, data string) *raftpb.Entry {
	e := &raftpb.Entry{Index: new(index), Term: new(term)}
	if data != "" {
		e.Data = []byte(data)
	}
	return e
}

func ents(first, last, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := first; i <= last; i++ {
		out = append(out, ent(i, term, "payload"))
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func mustSave(t testing.TB, s *Store, hs *raftpb.HardState, es []*raftpb.Entry) {
	t.Helper()
	if err := s.Save(hs, es); err != nil {
		t.Fatalf("Save: %v", err)
	}
}

func nopLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
