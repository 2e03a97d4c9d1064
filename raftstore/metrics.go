package raftstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are always maintained; they are registered only when
// Options.Registerer is set.
type metrics struct {
	saveDuration  prometheus.Histogram
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
	for _, c := range []prometheus.Collector{m.saveDuration, m.savedEntries, m.savedBytes, m.cacheHits, m.cacheMisses, m.snapshotBytes} {
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
	for _, c := range []prometheus.Collector{m.saveDuration, m.savedEntries, m.savedBytes, m.cacheHits, m.cacheMisses, m.snapshotBytes} {
		reg.Unregister(c)
	}
}
