package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/internal/grouplabel"
)

// metrics follow etcd's etcd_server_* names under the raftbus namespace, so
// existing dashboards translate. Where etcd's type contradicts its name
// (etcd exports proposals_committed_total and proposals_applied_total as
// gauges), these are counters: the indexes only grow within a process, so a
// counter is both honest and what rate() needs.
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	leaderChanges prometheus.Counter
	wakes         *prometheus.CounterVec
	pending       prometheus.Gauge
	failed        prometheus.Counter
	applied       prometheus.Gauge
	// commands counts state-machine commands applied (entries of other
	// kinds are not commands).
	commands  prometheus.Counter
	snapshots prometheus.Counter
	// snapshotsOnDemand counts snapshots taken because a peer needed one
	// that covers the current membership.
	snapshotsOnDemand prometheus.Counter
	snapshotDuration  prometheus.Histogram
	snapshotFailures  prometheus.Counter
	// duplicates counts proposals refused by the sessions table.
	duplicates prometheus.Counter
	// proposalRetries counts membership changes proposed again after an
	// election timeout without an answer (Raft drops proposals silently).
	proposalRetries prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "raftbus", Subsystem: "server", Name: name, Help: help}
	}
	m := &metrics{
		reg:           reg,
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts(opts("leader_changes_seen_total", "Leader changes seen by this node."))),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts(opts("quiescence_wakes_total",
			"Times this quiescent group woke up, by reason (proposal, read, message, leader_silent, membership); only on a Host.")), []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts(opts("proposals_pending", "Proposals waiting to be applied."))),
		failed:  prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_failed_total", "Proposals that failed or timed out."))),
		applied: prometheus.NewGauge(prometheus.GaugeOpts(opts("applied_index", "Index of the last applied entry."))),
		commands: prometheus.NewCounter(prometheus.CounterOpts(opts("commands_applied_total",
			"State-machine commands applied by this process (entries of other kinds, such as membership changes, are not commands)."))),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts(opts("snapshots_total", "Snapshots taken by this node."))),
		snapshotsOnDemand: prometheus.NewCounter(prometheus.CounterOpts(opts("snapshots_on_demand_total",
			"Snapshots taken because a peer needed one covering the current membership."))),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "raftbus", Subsystem: "server", Name: "snapshot_duration_seconds",
			Help:    "Time a local snapshot took: state machine image, encoding, durable write and log compaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1ms .. ~16s
		}),
		snapshotFailures: prometheus.NewCounter(prometheus.CounterOpts(opts("snapshot_failures_total",
			"Local snapshots that failed (a snapshot deferred until the apply loop catches up is not a failure)."))),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_refused_total",
			"Proposals not applied because their session had already applied them (duplicates, replays) or forgot them."))),
		proposalRetries: prometheus.NewCounter(prometheus.CounterOpts(opts("membership_proposal_retries_total",
			"Membership changes proposed again after an election timeout without an answer (Raft drops a proposal across a leader change or while an earlier change is not yet applied)."))),
	}
	hasLeader := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("has_leader", "1 if a leader is known, else 0.")), func() float64 {
		return b2f(n.lead.Load() != 0)
	})
	isLeader := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("is_leader", "1 if this node is the leader, else 0.")), func() float64 {
		return b2f(n.isLeader.Load())
	})
	committed := prometheus.NewCounterFunc(prometheus.CounterOpts(opts("proposals_committed_total",
		"Index of the last committed entry (etcd's name; a counter because it only grows).")), func() float64 {
		return float64(n.commit.Load())
	})
	// Raft indexes count every entry, so at applied index 7 this reads 7
	// even when no command was ever proposed (etcd's meaning).
	appliedTotal := prometheus.NewCounterFunc(prometheus.CounterOpts(opts("proposals_applied_total",
		"Index of the last applied entry (etcd's name; a counter because it only grows).")), func() float64 {
		return float64(n.applied.current())
	})
	voters := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("voters",
		"Voters in the membership this node applied (quorum is voters/2+1).")), func() float64 {
		v := 0
		for _, mb := range n.members.list() {
			if !mb.Learner {
				v++
			}
		}
		return float64(v)
	})
	m.collectors = []prometheus.Collector{voters, m.leaderChanges, m.wakes, m.pending, m.failed, m.applied, m.commands, m.snapshots,
		m.snapshotsOnDemand, m.snapshotDuration, m.snapshotFailures, m.duplicates, m.proposalRetries, hasLeader, isLeader, committed, appliedTotal}
	if reg != nil {
		for _, c := range m.collectors {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// groupRegisterer labels the node's own metrics with its group when it
// runs on a Host, so that many groups share one registry.
func groupRegisterer(cfg Config) prometheus.Registerer {
	if cfg.Registerer == nil || cfg.Host == nil {
		return cfg.Registerer
	}
	return grouplabel.Wrap(cfg.Registerer, cfg.Group)
}
