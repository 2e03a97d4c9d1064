package raftstore

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used by Options.validate. They are small on purpose: the project
// runs three or more nodes, a NATS server and a load generator on one
// two-core machine.
const (
	// DefaultCacheSize is the Pebble block cache size.
	DefaultCacheSize = 4 << 20
	// DefaultMemTableSize is the Pebble memtable size.
	DefaultMemTableSize = 4 << 20
	// DefaultMaxOpenFiles bounds the file descriptors Pebble keeps open.
	DefaultMaxOpenFiles = 64
	// DefaultEntryCacheSize bounds the bytes of recent entries kept in memory
	// to answer Entries and Term without touching Pebble.
	DefaultEntryCacheSize = 4 << 20
	// DefaultSnapshotsRetained is how many snapshot files are kept: the
	// current one and the one before it.
	DefaultSnapshotsRetained = 2
)

// Options configure a Store. The zero value is valid: validate fills in the
// defaults documented on each field.
type Options struct {
	// Logger receives the store's own messages and Pebble's. nil discards
	// them.
	Logger *slog.Logger

	// Registerer, if set, receives the store's metrics (see metrics.go).
	// nil registers nothing. Two stores of Open in one process need
	// distinct registerers, for example prometheus.WrapRegistererWith(labels,
	// reg); the groups of one Host share it, their series told apart by a
	// "group" label.
	Registerer prometheus.Registerer

	// NoSync disables every fsync: Pebble commits are not synced, Pebble's
	// own file syncs (memtable flushes, manifest) become no-ops, and
	// snapshot files and their directory are not fsynced. For tests and
	// benchmarks ONLY. With NoSync a machine crash or power loss (not a
	// process crash: the OS still holds the writes) can lose data that Save
	// reported as written, which lets this node forget a vote or an
	// acknowledged entry and break Raft's safety for the whole cluster.
	NoSync bool

	// CacheSize is the Pebble block cache in bytes. Default
	// DefaultCacheSize (4 MiB). Must not be negative.
	CacheSize int64

	// MemTableSize is the Pebble memtable size in bytes. Default
	// DefaultMemTableSize (4 MiB). Must be at least 64 KiB.
	MemTableSize uint64

	// MaxOpenFiles bounds the files Pebble keeps open. Default
	// DefaultMaxOpenFiles (64). Must be at least 16.
	MaxOpenFiles int

	// EntryCacheSize bounds, in bytes of encoded entries, the in-memory
	// cache of the newest log entries (Raft reads them to build MsgApp).
	// Default DefaultEntryCacheSize (4 MiB); a negative value disables the
	// cache.
	EntryCacheSize int64

	// SnapshotsRetained is how many snapshot files to keep, counting the
	// current one. Default DefaultSnapshotsRetained (2). Must be at least 1.
	SnapshotsRetained int

	// fs replaces the file system in tests: every file the store touches
	// (Pebble's and the snapshot files) goes through it, so tests can count
	// fsyncs, inject I/O errors (vfs/errorfs) and simulate a power loss
	// (vfs.NewCrashableMem). nil uses the OS (vfs.Default).
	fs vfs.FS
}

// validate fills in defaults and rejects values that cannot work.
func (o *Options) validate() error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.CacheSize < 0:
		return fmt.Errorf("raftstore: CacheSize %d is negative", o.CacheSize)
	case o.CacheSize == 0:
		o.CacheSize = DefaultCacheSize
	}
	switch {
	case o.MemTableSize == 0:
		o.MemTableSize = DefaultMemTableSize
	case o.MemTableSize < 64<<10:
		return fmt.Errorf("raftstore: MemTableSize %d is below 64 KiB", o.MemTableSize)
	case o.MemTableSize >= 4<<30:
		return fmt.Errorf("raftstore: MemTableSize %d must be below 4 GiB", o.MemTableSize)
	}
	switch {
	case o.MaxOpenFiles == 0:
		o.MaxOpenFiles = DefaultMaxOpenFiles
	case o.MaxOpenFiles < 16:
		return fmt.Errorf("raftstore: MaxOpenFiles %d is below 16", o.MaxOpenFiles)
	}
	switch {
	case o.EntryCacheSize == 0:
		o.EntryCacheSize = DefaultEntryCacheSize
	case o.EntryCacheSize < 0:
		o.EntryCacheSize = 0
	}
	switch {
	case o.SnapshotsRetained == 0:
		o.SnapshotsRetained = DefaultSnapshotsRetained
	case o.SnapshotsRetained < 1:
		return fmt.Errorf("raftstore: SnapshotsRetained %d is below 1", o.SnapshotsRetained)
	}
	if o.fs == nil {
		o.fs = vfs.Default
	}
	if o.NoSync {
		o.fs = noSyncFS{o.fs}
	}
	return nil
}

// pebbleOptions translates validated Options into Pebble's.
func (o *Options) pebbleOptions() *pebble.Options {
	po := &pebble.Options{
		FS:           o.fs,
		Logger:       pebbleLogger{o.Logger.With("component", "pebble")},
		CacheSize:    o.CacheSize,
		MemTableSize: o.MemTableSize,
		MaxOpenFiles: o.MaxOpenFiles,
		// Pin the on-disk format explicitly rather than inheriting Pebble's
		// minimum, so a store written by this build is read the same way
		// by the next one.
		FormatMajorVersion: pebble.FormatNewest,
	}
	return po
}

// pebbleLogger sends Pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

// Infof logs Pebble's informational messages at debug level: they are about
// flushes and compactions, noise for an operator of a Raft node.
func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

// Errorf logs Pebble's errors.
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble for unrecoverable conditions (a failed WAL
// write or sync, a failed MANIFEST sync, a broken invariant) and must not
// return: continuing would risk acknowledging Raft state that is not on
// disk. It logs and panics with a *fatalError. On the committing goroutine
// commitBatch recovers it into an error (the store then fails, see
// ErrFailed); in one of Pebble's background goroutines (a flush or
// compaction that cannot record its result) nothing can catch it and the
// process stops, as CockroachDB does in the same situation.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	fe := newFatalError(format, args)
	p.l.Error("fatal storage error", "err", fe.msg)
	panic(fe)
}
