package raftbridge

import (
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
)

// Drop reasons of the bridge. Together with the bus's reasons (which the
// bridge counts under the same metric) they are the values of the "reason"
// label of raftbus_transport_dropped_messages_total; doc.go says when each
// applies.
const (
	DropDecode           = bus.DropBadFrame // "decode"
	DropVersion          = bus.DropReason("version")
	DropClusterMismatch  = bus.DropReason("cluster_mismatch")
	DropWrongDestination = bus.DropReason("wrong_destination")
	DropSourceMismatch   = bus.DropReason("source_mismatch")
	DropTombstoned       = bus.DropReason("tombstoned")
	DropStaleIncarnation = bus.DropReason("stale_incarnation")
	DropUnknownSender    = bus.DropReason("unknown_sender")
	DropMessageMismatch  = bus.DropReason("message_mismatch")
	DropProcessFailed    = bus.DropReason("process_failed")
	DropUnknownPeer      = bus.DropReason("unknown_peer")
	DropLocalMessage     = bus.DropReason("local_message")
	DropUnknownKind      = bus.DropReason("unknown_kind")
	DropEncode           = bus.DropReason("encode")
	DropBridgeClosed     = bus.DropReason("closed")
)

// SnapshotResult is the outcome of one snapshot transfer, as counted in
// Stats and in the "result" label of the snapshot metrics.
type SnapshotResult string

// Snapshot transfer outcomes.
const (
	// SnapshotSuccess: the receiving node accepted the snapshot.
	SnapshotSuccess SnapshotResult = "success"
	// SnapshotFailed: the receiver refused the data (checksum, size,
	// validation) or its node returned an error.
	SnapshotFailed SnapshotResult = "failure"
	// SnapshotTimeout: no progress for Config.SnapshotTimeout.
	SnapshotTimeout SnapshotResult = "timeout"
	// SnapshotAbandoned: the peer's incarnation changed or was tombstoned,
	// a newer transfer superseded this one, or the bridge closed.
	SnapshotAbandoned SnapshotResult = "abandoned"
)

// Stats is a point-in-time copy of a bridge's counters. The maps are fresh
// copies owned by the caller.
type Stats struct {
	// Sent counts Raft messages and envelope bytes (snapshot chunks
	// included) per destination Raft ID.
	Sent map[uint64]PeerStats
	// Received counts validated Raft messages and bytes per source Raft
	// ID. Only members of the directory are admitted; a complete snapshot
	// whose sender left the directory while it was being received is
	// counted under key 0, so that no claimed ID can grow the map.
	Received map[uint64]PeerStats
	// Dropped counts dropped Raft messages by reason; where the messages
	// could not be counted (undecodable bytes, unsupported versions, bus
	// drops, snapshot chunks) one envelope counts as one.
	Dropped map[bus.DropReason]uint64
	// Unreachable counts ReportUnreachable calls per Raft ID; IDs the
	// directory does not know are counted under key 0.
	Unreachable map[uint64]uint64
	// SnapshotsSent and SnapshotsReceived count finished transfers by
	// outcome.
	SnapshotsSent     map[SnapshotResult]uint64
	SnapshotsReceived map[SnapshotResult]uint64
	// Queues is the bus's send queue depth per destination Raft ID; queues
	// toward incarnations the bridge cannot name are under key 0.
	Queues map[uint64]bus.QueueStats
	// PeerDirectoryVersion is the highest directory version seen in a
	// validated envelope: if it is above the local directory's version, a
	// peer has applied membership changes this node has not.
	PeerDirectoryVersion uint64
}

// PeerStats counts traffic with one peer.
type PeerStats struct {
	Messages uint64
	Bytes    uint64
}

// peerLabel is the value of the "peer" label: the 16-digit hex Raft ID.
func peerLabel(id uint64) string {
	if id == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%016x", id)
}

// meter keeps the counters behind Stats and, if a Registerer was given,
// the Prometheus metrics. It is shared by the Send caller, the bus delivery
// goroutine and the snapshot goroutines, hence the mutex; every update is a
// few map operations.
type meter struct {
	mu    sync.Mutex
	stats Stats
	prom  *promMetrics // nil without a Registerer
	// peerKey maps a Raft ID to the key it is counted under where the ID
	// is not already known to be a member (0 for IDs the directory does
	// not know); nil counts every ID as itself.
	peerKey func(uint64) uint64
}

func newMeter() *meter {
	return &meter{stats: Stats{
		Sent:              make(map[uint64]PeerStats),
		Received:          make(map[uint64]PeerStats),
		Dropped:           make(map[bus.DropReason]uint64),
		Unreachable:       make(map[uint64]uint64),
		SnapshotsSent:     make(map[SnapshotResult]uint64),
		SnapshotsReceived: make(map[SnapshotResult]uint64),
	}}
}

func (m *meter) sent(to uint64, msgs, bytes int) {
	m.mu.Lock()
	ps := m.stats.Sent[to]
	ps.Messages += uint64(msgs)
	ps.Bytes += uint64(bytes)
	m.stats.Sent[to] = ps
	m.mu.Unlock()
	if p := m.prom; p != nil {
		l := peerLabel(to)
		if msgs > 0 {
			p.sentMsgs.WithLabelValues(l).Add(float64(msgs))
		}
		p.sentBytes.WithLabelValues(l).Add(float64(bytes))
	}
}

// received counts traffic from a validated sender (a member; 0 for one
// that is no longer known).
func (m *meter) received(from uint64, msgs, bytes int, dirVersion uint64) {
	m.mu.Lock()
	ps := m.stats.Received[from]
	ps.Messages += uint64(msgs)
	ps.Bytes += uint64(bytes)
	m.stats.Received[from] = ps
	m.stats.PeerDirectoryVersion = max(m.stats.PeerDirectoryVersion, dirVersion)
	m.mu.Unlock()
	if p := m.prom; p != nil {
		l := peerLabel(from)
		if msgs > 0 {
			p.recvMsgs.WithLabelValues(l).Add(float64(msgs))
		}
		p.recvBytes.WithLabelValues(l).Add(float64(bytes))
	}
}

func (m *meter) dropped(reason bus.DropReason, n int) {
	m.mu.Lock()
	m.stats.Dropped[reason] += uint64(n)
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.dropped.WithLabelValues(string(reason)).Add(float64(n))
	}
}

func (m *meter) unreachable(id uint64) {
	if m.peerKey != nil {
		id = m.peerKey(id)
	}
	m.mu.Lock()
	m.stats.Unreachable[id]++
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.unreachable.WithLabelValues(peerLabel(id)).Inc()
	}
}

func (m *meter) snapshotSent(to uint64, r SnapshotResult) {
	m.mu.Lock()
	m.stats.SnapshotsSent[r]++
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.snapSent.WithLabelValues(peerLabel(to), string(r)).Inc()
	}
}

func (m *meter) snapshotReceived(from uint64, r SnapshotResult) {
	m.mu.Lock()
	m.stats.SnapshotsReceived[r]++
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.snapRecv.WithLabelValues(peerLabel(from), string(r)).Inc()
	}
}

func (m *meter) snapshot() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Sent = maps.Clone(s.Sent)
	s.Received = maps.Clone(s.Received)
	s.Dropped = maps.Clone(s.Dropped)
	s.Unreachable = maps.Clone(s.Unreachable)
	s.SnapshotsSent = maps.Clone(s.SnapshotsSent)
	s.SnapshotsReceived = maps.Clone(s.SnapshotsReceived)
	return s
}

// promMetrics are the bridge's Prometheus metrics. Label values are
// bounded: "peer" is a 16-digit hex Raft ID (never an incarnation), reasons
// and results are small fixed sets.
type promMetrics struct {
	sentMsgs, sentBytes *prometheus.CounterVec
	recvMsgs, recvBytes *prometheus.CounterVec
	dropped             *prometheus.CounterVec
	unreachable         *prometheus.CounterVec
	snapSent, snapRecv  *prometheus.CounterVec
}

const (
	metricNamespace = "raftbus"
	metricSubsystem = "transport"
)

func newPromMetrics() *promMetrics {
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricNamespace, Subsystem: metricSubsystem, Name: name, Help: help,
		}, labels)
	}
	return &promMetrics{
		sentMsgs:    counterVec("sent_messages_total", "Raft messages handed to the bus, by destination Raft ID.", "peer"),
		sentBytes:   counterVec("sent_bytes_total", "Envelope bytes handed to the bus (snapshot chunks included), by destination Raft ID.", "peer"),
		recvMsgs:    counterVec("received_messages_total", "Validated Raft messages received, by source Raft ID (\"unknown\" for a sender that left the directory).", "peer"),
		recvBytes:   counterVec("received_bytes_total", "Validated envelope bytes received, by source Raft ID (\"unknown\" for a sender that left the directory).", "peer"),
		dropped:     counterVec("dropped_messages_total", "Raft messages dropped (or envelopes, where messages cannot be counted), by reason.", "reason"),
		unreachable: counterVec("unreachable_reports_total", "ReportUnreachable calls made to Raft, by Raft ID (\"unknown\" for IDs not in the directory).", "peer"),
		snapSent:    counterVec("snapshots_sent_total", "Snapshot transfers finished as sender, by destination Raft ID and result.", "peer", "result"),
		snapRecv:    counterVec("snapshots_received_total", "Snapshot transfers finished as receiver, by source Raft ID and result.", "peer", "result"),
	}
}

func (p *promMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		p.sentMsgs, p.sentBytes, p.recvMsgs, p.recvBytes, p.dropped,
		p.unreachable, p.snapSent, p.snapRecv,
	}
}

// register registers every collector, or none: on an error it unregisters
// what it had registered, so a failed New leaves the registry unchanged.
func register(r prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("raftbridge: metrics already registered (one Registerer per bridge, or wrap it with prometheus.WrapRegistererWith): %w", err)
			}
			return fmt.Errorf("raftbridge: register metrics: %w", err)
		}
	}
	return nil
}

// queueCollector reports the bus's send queue depth per destination Raft
// ID. The bus knows queues by incarnation; the bridge maps them back with
// the incarnations it resolved in Send.
type queueCollector struct {
	b               *Bridge
	payloads, bytes *prometheus.Desc
}

func newQueueCollector(b *Bridge) *queueCollector {
	name := func(n string) string { return prometheus.BuildFQName(metricNamespace, metricSubsystem, n) }
	return &queueCollector{
		b:        b,
		payloads: prometheus.NewDesc(name("send_queue_payloads"), "Payloads waiting in the bus's send queue, by destination Raft ID.", []string{"peer"}, nil),
		bytes:    prometheus.NewDesc(name("send_queue_bytes"), "Bytes waiting in the bus's send queue, by destination Raft ID.", []string{"peer"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.payloads
	ch <- c.bytes
}

// Collect implements prometheus.Collector.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	// Several incarnations can map to one label ("unknown"), and a metric
	// must not be reported twice, so sum per label first.
	for id, q := range c.b.queues() {
		l := peerLabel(id)
		ch <- prometheus.MustNewConstMetric(c.payloads, prometheus.GaugeValue, float64(q.Payloads), l)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(q.Bytes), l)
	}
}

// incarnationIndex remembers which Raft ID each destination incarnation
// was resolved for, to name the bus's per-incarnation queues.
type incarnationIndex struct {
	mu sync.RWMutex
	m  map[uuid.UUID]uint64
}

// maxIndexedIncarnations bounds the index; when it overflows it starts
// afresh (it refills from the next Send to each peer).
const maxIndexedIncarnations = 256

func (x *incarnationIndex) note(inc uuid.UUID, id uint64) {
	x.mu.RLock()
	cur, ok := x.m[inc]
	x.mu.RUnlock()
	if ok && cur == id {
		return
	}
	x.mu.Lock()
	if x.m == nil || len(x.m) >= maxIndexedIncarnations {
		x.m = make(map[uuid.UUID]uint64)
	}
	x.m[inc] = id
	x.mu.Unlock()
}

func (x *incarnationIndex) lookup(inc uuid.UUID) uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.m[inc]
}

// hexID formats a Raft ID for logs.
func hexID(id uint64) string { return fmt.Sprintf("%016x", id) }
