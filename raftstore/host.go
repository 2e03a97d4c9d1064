package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/internal/grouplabel"
)

// ErrGroupOpen is returned by Host.Group for a group whose store is open:
// two stores of one group would each keep their own view of the log.
var ErrGroupOpen = errors.New("raftstore: group already open")

// groupsDirName holds the snapshot directories of the groups g > 0, one
// per group, named by g in 16 hex digits. Group 0 keeps dir/snap, so that
// a store written by Open is group 0 of a Host unchanged.
const groupsDirName = "groups"

// Host is one Pebble database, hence one write-ahead log, holding the Raft
// state of many groups, each read and written through its own *Store. A
// process running many Raft groups opens one Host per disk rather than one
// store per group: the groups' synced commits then share the WAL's fsyncs
// (Pebble commits concurrent synced batches with one fsync), and one block
// cache and memtable serve them all.
//
// The groups share a fate: after a storage failure in any of them (see
// ErrFailed) every group's store returns that same error, since they share
// the WAL and the disk whose state is now unknown.
//
// A Host is safe for concurrent use.
type Host struct {
	dir     string
	opts    Options
	log     *slog.Logger
	db      *pebble.DB
	metrics *hostMetrics
	legacy  bool // opened by Open: group 0's metrics carry no group label
	failed  atomic.Pointer[error]

	walFsyncs     atomic.Uint64
	syncedCommits atomic.Uint64

	// mu guards the fields below. Group holds it while it opens a store,
	// so that a group cannot be opened twice and Close waits for an open
	// in progress; it is never held while taking a Store's locks.
	mu           sync.Mutex
	closed       bool
	groups       map[uint64]*Store
	groupsSynced bool // dir and dir/groups fsynced since open
}

// HostStats are counters of a Host since it was opened.
type HostStats struct {
	// WALFsyncs is the number of fsyncs of Pebble's write-ahead log (0
	// with NoSync).
	WALFsyncs uint64
	// SyncedCommits is the number of batches committed with fsync by all
	// groups: Save, CreateSnapshot, ApplySnapshot and the creation of a
	// group. With concurrent writers it exceeds WALFsyncs, because Pebble
	// makes the batches waiting for the WAL durable with one fsync.
	SyncedCommits uint64
	// OpenGroups is the number of groups whose store is open.
	OpenGroups int
}

// OpenHost opens the Host in dir, creating it if it does not exist. Pebble
// keeps its files in dir/db, group 0's snapshot data goes to dir/snap and
// that of group g > 0 to dir/groups/<g in 16 hex digits>. The directory is
// the one Open uses: group 0 of a Host is the store Open opens. Pebble
// locks dir/db, so a directory cannot be opened twice at once, by Open or
// OpenHost.
//
// Options apply to the Host (Pebble's caches, NoSync, Registerer) and to
// each of its groups (EntryCacheSize is per group, SnapshotsRetained per
// group). With a Registerer the Host registers the WAL metrics once and
// each open group its own with a "group" label.
func OpenHost(dir string, opts Options) (*Host, error) {
	return openHost(dir, opts, false)
}

func openHost(dir string, opts Options, legacy bool) (*Host, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &Host{
		dir:    dir,
		opts:   opts,
		log:    opts.Logger.With("component", "raftstore", "dir", dir),
		legacy: legacy,
		groups: make(map[uint64]*Store),
	}
	snap := opts.fs.PathJoin(dir, snapDirName)
	if err := opts.fs.MkdirAll(snap, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: create %s: %w", snap, err)
	}
	// Directories MkdirAll may just have created must survive a power loss
	// before anything in them is relied on: Pebble fsyncs only db/ itself.
	for _, d := range []string{opts.fs.PathDir(dir), dir} {
		if err := syncDir(opts.fs, d); err != nil {
			return nil, err
		}
	}
	dbDir := opts.fs.PathJoin(dir, pebbleDirName)
	// The database is created with group 0 initialised, so that a Host's
	// directory is also a store for Open, and a database that lost group
	// 0's version is still recognised as damaged rather than new.
	if err := createIfMissing(dbDir, &opts); err != nil {
		return nil, err
	}
	m, err := newHostMetrics(opts.Registerer, h)
	if err != nil {
		return nil, err
	}
	po := opts.pebbleOptions()
	if !opts.NoSync {
		po.FS = fsyncTimingFS{FS: po.FS, h: m.fsyncDuration, n: &h.walFsyncs}
	}
	db, err := openPebble(dbDir, po)
	if err != nil {
		unregisterAll(opts.Registerer, m.collectors())
		return nil, err
	}
	h.db, h.metrics = db, m
	return h, nil
}

// Group opens the store of Raft group g, creating the group if the Host
// has no state for it. The store has the whole API and contract of a store
// opened with Open, confined to the group. It fails with an error wrapping
// ErrGroupOpen while the group's store is open, with ErrClosed after Close
// and with the Host's failure (ErrFailed) after one.
//
// Close the store to release the group; closing the Host closes them all.
func (h *Host) Group(g uint64) (*Store, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if err := h.failure(); err != nil {
		return nil, err
	}
	if _, ok := h.groups[g]; ok {
		return nil, fmt.Errorf("%w: group %d of %s", ErrGroupOpen, g, h.dir)
	}
	s := &Store{
		dir:   h.dir,
		opts:  h.opts,
		db:    h.db,
		host:  h,
		group: g,
		keys:  newKeySpace(g),
		snaps: snapDir{fs: h.opts.fs, dir: h.snapDirOf(g)},
		log:   h.log,
		snap:  &snapRecord{},
	}
	if g != 0 {
		s.log = h.log.With("group", g)
	}
	s.cache.maxBytes = h.opts.EntryCacheSize
	if err := h.prepareGroup(s); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	m, err := newMetrics(h.groupRegisterer(g))
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.metrics.snapshotBytes.Set(float64(s.snap.size))
	h.groups[g] = s
	s.log.Info("raft store opened", "first_index", s.trunc.index+1, "last_index", s.lastIndex,
		"snapshot_index", s.snap.index, "term", s.hardState.GetTerm(), "commit", s.hardState.GetCommit())
	return s, nil
}

// snapDirOf returns the snapshot directory of group g.
func (h *Host) snapDirOf(g uint64) string {
	if g == 0 {
		return h.opts.fs.PathJoin(h.dir, snapDirName)
	}
	return h.opts.fs.PathJoin(h.dir, groupsDirName, fmt.Sprintf("%016x", g))
}

// prepareGroup makes sure that group g > 0 has a durable snapshot
// directory and, if the group is new, initialises it (format version,
// empty truncated state) in one synced batch, as createIfMissing does for
// group 0. The directory is made durable first, so a group that exists in
// the database always has its directory. Call it with mu held.
func (h *Host) prepareGroup(s *Store) error {
	if s.group == 0 {
		return nil // created with the database
	}
	fsys := h.opts.fs
	groupsDir := fsys.PathJoin(h.dir, groupsDirName)
	_, statErr := fsys.Stat(s.snaps.dir)
	created := errors.Is(statErr, fs.ErrNotExist)
	if statErr != nil && !created {
		return fmt.Errorf("raftstore: %w", statErr)
	}
	if err := fsys.MkdirAll(s.snaps.dir, 0o700); err != nil {
		return fmt.Errorf("raftstore: create %s: %w", s.snaps.dir, err)
	}
	// Once per Host, fsync the parents even when the directory exists: a
	// process crash may have left it created but not yet durable.
	if !h.groupsSynced {
		for _, d := range []string{h.dir, groupsDir} {
			if err := syncDir(fsys, d); err != nil {
				return err
			}
		}
		h.groupsSynced = true
	} else if created {
		if err := syncDir(fsys, groupsDir); err != nil {
			return err
		}
	}

	v, err := s.get(s.keys.version)
	if err != nil || v != nil {
		return err // load checks the version
	}
	// No version: a new group, unless it has other keys, whose version is
	// then lost; such a group must not silently restart empty.
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: s.keys.prefix, UpperBound: groupPrefixEnd(s.group)})
	if err != nil {
		return fmt.Errorf("raftstore: iterate group %d: %w", s.group, err)
	}
	found := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("raftstore: iterate group %d: %w", s.group, err)
	}
	if found {
		return fmt.Errorf("%w: %s has data but no format version", ErrCorrupt, s.name())
	}
	b := h.db.NewBatch()
	defer b.Close()
	_ = b.Set(s.keys.version, encodeVersion(formatVersion), nil)
	_ = b.Set(s.keys.truncated, truncatedState{}.encode(), nil)
	if err := s.commit(b, s.writeOpts()); err != nil {
		err = fmt.Errorf("%w: create %s: %w", ErrFailed, s.name(), err)
		return h.fail(err, s.group)
	}
	return nil
}

// groupPrefixEnd is the exclusive upper bound of the keys of group g > 0.
func groupPrefixEnd(g uint64) []byte {
	if g == ^uint64(0) {
		return []byte{groupPrefixByte + 1}
	}
	return groupPrefix(g + 1)
}

// groupRegisterer returns where group g registers its metrics.
func (h *Host) groupRegisterer(g uint64) prometheus.Registerer {
	if h.opts.Registerer == nil || h.legacy {
		return h.opts.Registerer
	}
	return grouplabel.Wrap(h.opts.Registerer, g)
}

// Groups returns, in increasing order, the groups that have state in the
// database, open or not. Group 0 is always among them: it is initialised
// with the database.
func (h *Host) Groups() ([]uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	var out []uint64
	if _, closer, err := h.db.Get(keyVersion); err == nil {
		_ = closer.Close()
		out = append(out, 0)
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("raftstore: read %q: %w", keyVersion, err)
	}
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte{groupPrefixByte}, UpperBound: []byte{groupPrefixByte + 1}})
	if err != nil {
		return nil, fmt.Errorf("raftstore: list groups: %w", err)
	}
	defer it.Close()
	// One seek per group: skip over each group's keys to the next prefix.
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < groupPrefixLen {
			return nil, fmt.Errorf("%w: malformed group key %x", ErrCorrupt, k)
		}
		g := binary.BigEndian.Uint64(k[1:groupPrefixLen])
		out = append(out, g)
		if g == ^uint64(0) {
			break
		}
		ok = it.SeekGE(groupPrefix(g + 1))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("raftstore: list groups: %w", err)
	}
	return out, nil
}

// Stats returns the Host's counters.
func (h *Host) Stats() HostStats {
	h.mu.Lock()
	n := len(h.groups)
	h.mu.Unlock()
	return HostStats{WALFsyncs: h.walFsyncs.Load(), SyncedCommits: h.syncedCommits.Load(), OpenGroups: n}
}

// Close closes every open group's store, then the database. It is
// idempotent; every call after the first returns nil.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	stores := make([]*Store, 0, len(h.groups))
	for _, s := range h.groups {
		stores = append(stores, s)
	}
	h.mu.Unlock()
	// Outside mu: a store's release takes its own locks, then mu.
	for _, s := range stores {
		s.release()
	}
	unregisterAll(h.opts.Registerer, h.metrics.collectors())
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("raftstore: close: %w", err)
	}
	return nil
}

// forget removes a released store from the open groups.
func (h *Host) forget(g uint64, s *Store) {
	h.mu.Lock()
	if h.groups[g] == s {
		delete(h.groups, g)
	}
	h.mu.Unlock()
}

// fail records the first storage failure of any group and returns it: the
// error every group reports from then on.
func (h *Host) fail(err error, g uint64) error {
	if h.failed.CompareAndSwap(nil, &err) {
		h.log.Error("storage failed; every group of the host stops", "group", g, "err", err)
	}
	return *h.failed.Load()
}

// failure returns the Host's storage failure, or nil.
func (h *Host) failure() error {
	if p := h.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// StoredGroups lists the groups with state in the store's database (as
// Host.Groups), also for a store opened with Open: a single-group user
// can then refuse a directory that holds many groups.
func (s *Store) StoredGroups() ([]uint64, error) { return s.host.Groups() }
