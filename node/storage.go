package node

import (
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Storage is the durable Raft state a node needs: raft.Storage for reads
// plus the writes of the Ready loop. raftstore.Store implements it on Pebble;
// MemoryStorage is for tests.
//
// Implementations must be safe for concurrent use: Raft reads from its own
// goroutine while the node writes from its Ready and apply goroutines.
type Storage interface {
	raft.Storage
	// Save durably appends entries (replacing any conflicting suffix) and
	// records the hard state (nil or empty: unchanged), atomically.
	Save(hs *raftpb.HardState, entries []*raftpb.Entry) error
	// ApplySnapshot durably installs a snapshot received from the leader.
	ApplySnapshot(snap *raftpb.Snapshot) error
	// CreateSnapshot durably records a snapshot taken at index i.
	CreateSnapshot(i uint64, cs *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error)
	// Compact discards entries before compactIndex.
	Compact(compactIndex uint64) error
}

// CommitSaver is implemented by storage that can record a hard state whose
// only change is the commit index without fsync. The Ready loop uses it
// when raft.MustSync says the Ready needs no sync (at one client this
// halves the leader's fsyncs, as etcd's WAL does).
type CommitSaver interface {
	SaveCommit(hs *raftpb.HardState) error
}

// MemoryStorage is a Storage held in memory, for tests and demos: nothing
// survives the process.
type MemoryStorage struct {
	*raft.MemoryStorage
}

// NewMemoryStorage returns an empty in-memory Storage.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{MemoryStorage: raft.NewMemoryStorage()}
}

// Save implements Storage.
func (m *MemoryStorage) Save(hs *raftpb.HardState, entries []*raftpb.Entry) error {
	if !raft.IsEmptyHardState(hs) {
		if err := m.SetHardState(hs); err != nil {
			return err
		}
	}
	if len(entries) > 0 {
		return m.Append(entries)
	}
	return nil
}
