package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics follow etcd's etcd_server_* names under the raftbus namespace, so
// existing dashboards translate.
type metrics struct {
	reg              prometheus.Registerer
	collectors       []prometheus.Collector
	leaderChanges    prometheus.Counter
	pending          prometheus.Gauge
	failed           prometheus.Counter
	applied          prometheus.Gauge
	appliedProposals prometheus.Counter
	snapshots        prometheus.Counter
	// snapshotsOnDemand counts snapshots taken because a peer needed one
	// that covers the current membership.
	snapshotsOnDemand prometheus.Counter
	// duplicates counts proposals refused by the sessions table.
	duplicates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "raftbus", Subsystem: "server", Name: name, Help: help}
	}
	m := &metrics{
		reg:              reg,
		leaderChanges:    prometheus.NewCounter(prometheus.CounterOpts(opts("leader_changes_seen_total", "Leader changes seen by this node."))),
		pending:          prometheus.NewGauge(prometheus.GaugeOpts(opts("proposals_pending", "Proposals waiting to be applied."))),
		failed:           prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_failed_total", "Proposals that failed or timed out."))),
		applied:          prometheus.NewGauge(prometheus.GaugeOpts(opts("applied_index", "Index of the last applied entry."))),
		appliedProposals: prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_applied_total", "Proposals applied to the state machine."))),
		snapshots:        prometheus.NewCounter(prometheus.CounterOpts(opts("snapshots_total", "Snapshots taken by this node."))),
		snapshotsOnDemand: prometheus.NewCounter(prometheus.CounterOpts(opts("snapshots_on_demand_total",
			"Snapshots taken because a peer needed one covering the current membership."))),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_refused_total",
			"Proposals not applied because their session had already applied them (duplicates, replays) or forgot them."))),
	}
	hasLeader := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("has_leader", "1 if a leader is known, else 0.")), func() float64 {
		return b2f(n.lead.Load() != 0)
	})
	isLeader := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("is_leader", "1 if this node is the leader, else 0.")), func() float64 {
		return b2f(n.isLeader.Load())
	})
	committed := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("proposals_committed_total", "Index of the last committed entry (etcd's name).")), func() float64 {
		return float64(n.commit.Load())
	})
	m.collectors = []prometheus.Collector{m.leaderChanges, m.pending, m.failed, m.applied, m.appliedProposals, m.snapshots, m.snapshotsOnDemand, m.duplicates, hasLeader, isLeader, committed}
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
