package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Store is a durable raft.Storage backed by Pebble, with snapshot data in
// files beside it. It is safe for concurrent use: Raft's goroutine reads
// while the node's Ready loop writes.
type Store struct {
	dir     string // the store directory given to Open or OpenHost
	snaps   snapDir
	opts    Options
	log     *slog.Logger
	metrics *metrics
	db      *pebble.DB // the Host's, shared by all its groups

	host     *Host
	group    uint64
	keys     *keySpace
	ownsHost bool // opened by Open: Close closes the Host too

	// writeMu serialises the mutating methods (Save, ApplySnapshot,
	// CreateSnapshot, Compact, Close). A field below is changed only with
	// both writeMu and mu held, so a writer may read them holding writeMu
	// alone.
	writeMu sync.Mutex
	// mu guards the in-memory view of the log. Readers hold it shared.
	// Appends commit to Pebble without it (readers never look past
	// lastIndex, so new entries stay invisible until the view is updated);
	// writes that replace or delete existing entries commit while holding
	// it exclusively, so no reader sees half of the change.
	mu        sync.RWMutex
	closed    bool
	failed    error             // first write error; see ErrFailed
	hardState *raftpb.HardState // nil until a non-empty one is saved
	trunc     truncatedState    // entry before the first one in the log
	lastIndex uint64            // == trunc.index when the log is empty
	snap      *snapRecord       // latest snapshot; zero record if none
	cache     entryCache        // newest entries

	// snapMu guards the cached data of the latest snapshot. It is taken
	// before mu, never while holding it.
	snapMu       sync.Mutex
	snapData     []byte
	snapDataFile string // snapRecord.file that snapData belongs to
	snapDataOK   bool
}

var _ raft.Storage = (*Store)(nil)

// Open opens the store in dir, creating it if it does not exist. Pebble
// keeps its files in dir/db and snapshot data goes to dir/snap. Open checks
// the format version, the consistency of the log bounds and the checksum of
// the latest snapshot file, and returns an error wrapping ErrCorrupt or
// ErrUnsupportedFormat rather than opening a damaged store. Pebble locks
// dir/db, so a second Open of the same directory fails until Close.
//
// The store is group 0 of a Host of its own (see OpenHost) that Close
// closes with it: a directory written by Open reads back through
// OpenHost(dir, opts).Group(0), and the other way round.
func Open(dir string, opts Options) (*Store, error) {
	h, err := openHost(dir, opts, true)
	if err != nil {
		return nil, err
	}
	s, err := h.Group(0)
	if err != nil {
		_ = h.Close() // as before Host existed: the open error is the one to report
		return nil, err
	}
	s.ownsHost = true
	return s, nil
}

// openPebble opens the database, turning a panic inside Pebble (possible on
// some malformed files) into an error.
func openPebble(dir string, po *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		r := recover()
		if fe, ok := r.(*fatalError); ok { // an I/O failure, not bad data
			db, err = nil, fmt.Errorf("raftstore: open pebble at %s: %w", dir, fe)
		} else if r != nil {
			db, err = nil, fmt.Errorf("%w: open pebble at %s: %v", ErrCorrupt, dir, r)
		}
	}()
	db, err = pebble.Open(dir, po)
	if err != nil {
		if errors.Is(err, pebble.ErrCorruption) {
			return nil, fmt.Errorf("%w: open pebble at %s: %w", ErrCorrupt, dir, err)
		}
		return nil, fmt.Errorf("raftstore: open pebble at %s: %w", dir, err)
	}
	return db, nil
}

// get returns a copy of the value of key, or nil if it is absent.
func (s *Store) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("raftstore: read %q: %w", key, err)
	}
	out := append([]byte{}, v...)
	return out, closer.Close()
}

// load initialises a new store or reads the state of an existing one.
func (s *Store) load() error {
	v, err := s.get(s.keys.version)
	if err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("%w: %s has no format version (its contents are lost or it is not a raftstore)", ErrCorrupt, s.name())
	}
	version, err := decodeVersion(v)
	if err != nil {
		return err
	}
	if version != formatVersion {
		return fmt.Errorf("%w: %s has format version %d, this build reads %d", ErrUnsupportedFormat, s.name(), version, formatVersion)
	}

	if v, err = s.get(s.keys.hardState); err != nil {
		return err
	} else if v != nil {
		hs := &raftpb.HardState{}
		if err := proto.Unmarshal(v, hs); err != nil {
			return fmt.Errorf("%w: hard state: %w", ErrCorrupt, err)
		}
		s.hardState = hs
	}

	if v, err = s.get(s.keys.truncated); err != nil {
		return err
	} else if v == nil {
		return fmt.Errorf("%w: truncated state is missing", ErrCorrupt)
	}
	if s.trunc, err = decodeTruncated(v); err != nil {
		return err
	}

	if v, err = s.get(s.keys.snapshot); err != nil {
		return err
	} else if v != nil {
		if s.snap, err = decodeSnapRecord(v); err != nil {
			return err
		}
		if err := proto.Unmarshal(s.snap.confState, &raftpb.ConfState{}); err != nil {
			return fmt.Errorf("%w: snapshot conf state: %w", ErrCorrupt, err)
		}
	}
	if s.snap.index < s.trunc.index {
		return fmt.Errorf("%w: log truncated at %d beyond the snapshot at %d", ErrCorrupt, s.trunc.index, s.snap.index)
	}

	if err := s.loadLogBounds(); err != nil {
		return err
	}
	if s.snap.file != "" {
		if err := s.snaps.verify(s.snap); err != nil {
			return err
		}
	}
	s.repairCommit()
	removed, err := s.snaps.prune(s.snap, s.opts.SnapshotsRetained, true)
	if len(removed) > 0 {
		s.log.Info("removed stale snapshot files", "files", removed)
	}
	return err
}

// repairCommit raises, in memory, a saved commit index that lies below the
// log's truncation point. Raft refuses to restart with such a hard state
// ("state.commit is out of range"). Earlier versions left one behind when
// the node crashed between ApplySnapshot and Save; everything up to the
// truncation point is covered by a snapshot, hence committed, so raising the
// commit index is safe. The next Save writes it.
func (s *Store) repairCommit() {
	if s.hardState == nil {
		return // raft starts from the log's start without a hard state
	}
	hs := coverSnapshot(s.hardState, s.trunc.index, s.trunc.term)
	if hs == nil {
		return
	}
	s.log.Warn("saved hard state is behind the log's truncation point; raising it",
		"commit", s.hardState.GetCommit(), "term", s.hardState.GetTerm(),
		"truncated_index", s.trunc.index, "truncated_term", s.trunc.term)
	s.hardState = hs
}

// createIfMissing creates a new store's database atomically: it is built
// and initialised (format version, empty truncated state) under a temporary
// name, then renamed into place. So a database that exists always carries a
// format version, and one that has lost it (for example to a destroyed
// write-ahead log) is reported as corrupt rather than silently treated as
// new.
func createIfMissing(dbDir string, opts *Options) error {
	fsys := opts.fs
	if _, err := fsys.Stat(dbDir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("raftstore: %w", err)
	}
	tmp := dbDir + ".init"
	if err := fsys.RemoveAll(tmp); err != nil { // left by a crash during creation
		return fmt.Errorf("raftstore: remove %s: %w", tmp, err)
	}
	db, err := openPebble(tmp, opts.pebbleOptions())
	if err != nil {
		return err
	}
	b := db.NewBatch()
	_ = b.Set(keyVersion, encodeVersion(formatVersion), nil)
	_ = b.Set(keyTruncated, truncatedState{}.encode(), nil)
	err = commitBatch(b, pebble.Sync)
	err = errors.Join(err, b.Close(), db.Close())
	if err != nil {
		return fmt.Errorf("raftstore: initialise %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, dbDir); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	return syncDir(fsys, fsys.PathDir(dbDir)) // a no-op with NoSync (noSyncFS)
}

// loadLogBounds finds the last index and checks that the log starts right
// after the truncated state.
func (s *Store) loadLogBounds() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: s.keys.logStart, UpperBound: s.keys.logEnd})
	if err != nil {
		return fmt.Errorf("raftstore: iterate log: %w", err)
	}
	defer it.Close()
	s.lastIndex = s.trunc.index
	if !it.First() {
		return it.Error()
	}
	first, err := s.keys.parseLogKey(it.Key())
	if err != nil {
		return err
	}
	if !it.Last() {
		return fmt.Errorf("raftstore: iterate log: %w", it.Error())
	}
	last, err := s.keys.parseLogKey(it.Key())
	if err != nil {
		return err
	}
	if first != s.trunc.index+1 {
		return fmt.Errorf("%w: log starts at %d but was truncated at %d", ErrCorrupt, first, s.trunc.index)
	}
	s.lastIndex = last
	return it.Error()
}

func (s *Store) writeOpts() *pebble.WriteOptions {
	if s.opts.NoSync {
		return pebble.NoSync
	}
	return pebble.Sync
}

// usable returns the error that every call must return on a closed or
// failed store. Call it with mu or writeMu held.
func (s *Store) usable() error {
	if s.closed {
		return ErrClosed
	}
	if s.failed != nil {
		return s.failed
	}
	// The groups of a Host share its WAL and disk: a failure in one of them
	// stops them all.
	return s.host.failure()
}

// fail records the first write error; after it the store, and every other
// group of its Host, refuses all work. The failing call reports its own
// error; later calls report the Host's first failure. Call it with writeMu
// held.
func (s *Store) fail(err error) error {
	err = fmt.Errorf("%w: %w", ErrFailed, err)
	first := s.host.fail(err, s.group)
	s.mu.Lock()
	if s.failed == nil {
		s.failed = first
	}
	s.mu.Unlock()
	s.log.Error("raft store write failed; refusing further use", "err", err)
	return err
}

// commit commits b for the group, counting synced commits for
// Host.Stats. Call it with writeMu held.
func (s *Store) commit(b *pebble.Batch, wo *pebble.WriteOptions) error {
	err := commitBatch(b, wo)
	if err == nil && wo.Sync {
		s.host.syncedCommits.Add(1)
	}
	return err
}

// Close closes the store. It is idempotent; every call after the first
// returns nil, and every other method returns ErrClosed. A store opened
// with Open closes its database too; one from Host.Group only releases its
// group (the Host and its other groups stay open, and Group may open it
// again).
func (s *Store) Close() error {
	s.release()
	if s.ownsHost {
		return s.host.Close()
	}
	return nil
}

// release closes the store without touching the database.
func (s *Store) release() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.cache.reset()
	s.mu.Unlock()
	s.snapMu.Lock()
	s.snapData, s.snapDataOK = nil, false
	s.snapMu.Unlock()
	s.metrics.unregister(s.host.groupRegisterer(s.group))
	s.host.forget(s.group, s)
}

// InitialState implements raft.Storage: the saved hard state (nil if none
// was ever saved) and the conf state of the latest snapshot (empty, never
// nil, if there is none). Both are copies.
func (s *Store) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, nil, err
	}
	cs, err := s.snap.decodeConfState()
	if err != nil {
		return nil, nil, err
	}
	var hs *raftpb.HardState
	if s.hardState != nil {
		hs = proto.Clone(s.hardState).(*raftpb.HardState)
	}
	return hs, cs, nil
}

// decodeConfState returns a fresh copy of the record's conf state with all
// fields present (raftpb.EnsureConfState), as MemoryStorage returns it.
func (r *snapRecord) decodeConfState() (*raftpb.ConfState, error) {
	cs := &raftpb.ConfState{}
	if err := proto.Unmarshal(r.confState, cs); err != nil {
		return nil, fmt.Errorf("%w: snapshot conf state: %w", ErrCorrupt, err)
	}
	return raftpb.EnsureConfState(cs), nil
}

// FirstIndex implements raft.Storage.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	return s.trunc.index + 1, nil
}

// LastIndex implements raft.Storage.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	return s.lastIndex, nil
}

// Dir returns the directory the store was opened in: for a group of a
// Host, the Host's directory.
func (s *Store) Dir() string { return s.dir }

// Group returns the store's Raft group: 0 for a store opened with Open.
func (s *Store) Group() uint64 { return s.group }

// name describes the store in errors: its directory and, in a Host, its
// group.
func (s *Store) name() string {
	if s.group == 0 {
		return s.dir
	}
	return fmt.Sprintf("%s group %d", s.dir, s.group)
}
