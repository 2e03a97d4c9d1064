package raftstore

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a group's; they are always maintained and registered only
// when Options.Registerer is set (for a group of a Host, with a "group"
// label).
type metrics struct {
	saveDuration  prometheus.Histogram
	savedEntries  prometheus.Counter
	savedBytes    prometheus.Counter
	cacheHits     prometheus.Counter
	cacheMisses   prometheus.Counter
	snapshotBytes prometheus.Gauge
}

const metricsNamespace, metricsSubsystem = "raftbus", "raftstore"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = metricsNamespace, metricsSubsystem
	m := &metrics{
		saveDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "save_duration_seconds",
			Help:    "Time Save took to commit a Ready's entries and hard state, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16), // 50µs .. ~1.6s
		}),
		savedEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "saved_entries_total",
			Help: "Log entries written by Save.",
		}),
		savedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "saved_bytes_total",
			Help: "Encoded bytes of log entries written by Save.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "entry_cache_hits_total",
			Help: "Entries and Term calls answered from the in-memory entry cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "entry_cache_misses_total",
			Help: "Entries and Term calls that had to read Pebble.",
		}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshot_size_bytes",
			Help: "Size of the data of the latest snapshot.",
		}),
	}
	if err := registerAll(reg, m.collectors()); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.saveDuration, m.savedEntries, m.savedBytes, m.cacheHits, m.cacheMisses, m.snapshotBytes}
}

// unregister removes the collectors so that a store can be reopened with the
// same registerer.
func (m *metrics) unregister(reg prometheus.Registerer) {
	unregisterAll(reg, m.collectors())
}

// registerAll registers cs on reg (nil: nowhere), all or none.
func registerAll(reg prometheus.Registerer, cs []prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			unregisterAll(reg, cs[:i])
			return fmt.Errorf("raftstore: register metrics: %w", err)
		}
	}
	return nil
}

func unregisterAll(reg prometheus.Registerer, cs []prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range cs {
		reg.Unregister(c)
	}
}

// hostMetrics are those of the shared database and WAL, registered once
// per Host, without a group label.
type hostMetrics struct {
	fsyncDuration prometheus.Histogram
	walFsyncs     prometheus.CounterFunc
	syncedCommits prometheus.CounterFunc
}

func newHostMetrics(reg prometheus.Registerer, h *Host) (*hostMetrics, error) {
	const ns, sub = metricsNamespace, metricsSubsystem
	m := &hostMetrics{
		fsyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "wal_fsync_duration_seconds",
			Help:    "Time one fsync (fdatasync) of Pebble's write-ahead log took (etcd_disk_wal_fsync_duration_seconds); not observed with NoSync.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16), // 50µs .. ~1.6s
		}),
		walFsyncs: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "wal_fsyncs_total",
			Help: "Fsyncs of Pebble's write-ahead log, shared by all Raft groups of the store; none with NoSync.",
		}, func() float64 { return float64(h.walFsyncs.Load()) }),
		syncedCommits: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "synced_commits_total",
			Help: "Batches committed with fsync (Save, snapshots, group creation) by all Raft groups of the store; above wal_fsyncs_total when Pebble coalesces concurrent commits into one fsync.",
		}, func() float64 { return float64(h.syncedCommits.Load()) }),
	}
	if err := registerAll(reg, m.collectors()); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *hostMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.fsyncDuration, m.walFsyncs, m.syncedCommits}
}

// walCategory is the DiskWriteCategory Pebble creates its WAL files with.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// fsyncTimingFS times and counts the fsyncs of the WAL files Pebble creates
// through it: the durable half of every Save, which Pebble's own latency
// histogram keeps to itself. The count against the synced commits shows
// how well Pebble groups the commits of concurrent Saves into one fsync.
type fsyncTimingFS struct {
	vfs.FS
	h prometheus.Histogram
	n *atomic.Uint64
}

func (fs fsyncTimingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.timed(f, err, c)
}

func (fs fsyncTimingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.timed(f, err, c)
}

func (fs fsyncTimingFS) timed(f vfs.File, err error, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err != nil || c != walCategory {
		return f, err
	}
	return fsyncTimedFile{File: f, h: fs.h, n: fs.n}, nil
}

type fsyncTimedFile struct {
	vfs.File
	h prometheus.Histogram
	n *atomic.Uint64
}

func (f fsyncTimedFile) Sync() error {
	f.n.Add(1)
	start := time.Now()
	err := f.File.Sync()
	f.h.Observe(time.Since(start).Seconds())
	return err
}

func (f fsyncTimedFile) SyncData() error {
	f.n.Add(1)
	start := time.Now()
	err := f.File.SyncData()
	f.h.Observe(time.Since(start).Seconds())
	return err
}

// SnapshotIndex returns the index of the latest snapshot, 0 if there is
// none, without reading its data (for status pages and health checks).
func (s *Store) SnapshotIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snap.index
}
