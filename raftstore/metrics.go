package raftstore

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are always maintained; they are registered only when
// Options.Registerer is set.
type metrics struct {
	saveDuration  prometheus.Histogram
	fsyncDuration prometheus.Histogram
	savedEntries  prometheus.Counter
	savedBytes    prometheus.Counter
	cacheHits     prometheus.Counter
	cacheMisses   prometheus.Counter
	snapshotBytes prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "raftbus", "raftstore"
	m := &metrics{
		saveDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "save_duration_seconds",
			Help:    "Time Save took to commit a Ready's entries and hard state, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16), // 50µs .. ~1.6s
		}),
		fsyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "wal_fsync_duration_seconds",
			Help:    "Time one fsync (fdatasync) of Pebble's write-ahead log took (etcd_disk_wal_fsync_duration_seconds); not observed with NoSync.",
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
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.saveDuration, m.fsyncDuration, m.savedEntries, m.savedBytes, m.cacheHits, m.cacheMisses, m.snapshotBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("raftstore: register metrics: %w", err)
		}
	}
	return m, nil
}

// unregister removes the collectors so that a store can be reopened with the
// same registerer.
func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.saveDuration, m.fsyncDuration, m.savedEntries, m.savedBytes, m.cacheHits, m.cacheMisses, m.snapshotBytes} {
		reg.Unregister(c)
	}
}

// walCategory is the DiskWriteCategory Pebble creates its WAL files with.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// fsyncTimingFS times the fsyncs of the WAL files Pebble creates through
// it: the durable half of every Save, which Pebble's own latency histogram
// keeps to itself.
type fsyncTimingFS struct {
	vfs.FS
	h prometheus.Histogram
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
	return fsyncTimedFile{File: f, h: fs.h}, nil
}

type fsyncTimedFile struct {
	vfs.File
	h prometheus.Histogram
}

func (f fsyncTimedFile) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.h.Observe(time.Since(start).Seconds())
	return err
}

func (f fsyncTimedFile) SyncData() error {
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
