package raftbridge

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3/raftpb"

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
	DropGroupMismatch    = bus.DropReason("group_mismatch")
	DropUnknownGroup     = bus.DropReason("unknown_group")
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

// DropReasons lists every drop reason a production bridge over a NATS bus can
// count, in a fixed order: the bridge's own and the bus's. The drop metrics
// are created for each of them up front, so that every series exists (at 0)
// before the first drop and a rate() over it works from the start. The
// in-memory bus's fault-injection reason (bus.DropPartitioned) is
// deliberately absent: only tests produce it.
var DropReasons = []bus.DropReason{
	DropDecode, DropVersion, DropClusterMismatch, DropGroupMismatch, DropWrongDestination, DropSourceMismatch,
	DropTombstoned, DropStaleIncarnation, DropUnknownSender, DropMessageMismatch,
	DropProcessFailed, DropUnknownPeer, DropLocalMessage, DropUnknownKind, DropEncode,
	DropBridgeClosed,
	bus.DropQueueFull, bus.DropTooLarge, bus.DropNotConnected, bus.DropPublishFailed,
	bus.DropBadSubject, bus.DropSlowConsumer,
}

// SnapshotResults lists every SnapshotResult.
var SnapshotResults = []SnapshotResult{SnapshotSuccess, SnapshotFailed, SnapshotTimeout, SnapshotAbandoned}

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
	// Dropped counts drops by reason: DroppedMessages plus
	// DroppedEnvelopes, for a one-glance view. Alert on the two metrics,
	// which keep the units apart.
	Dropped map[bus.DropReason]uint64
	// DroppedMessages counts Raft messages dropped one by one or in an
	// envelope whose message count was known (the
	// raftbus_transport_dropped_messages_total metric).
	DroppedMessages map[bus.DropReason]uint64
	// DroppedEnvelopes counts whole payloads dropped before their Raft
	// messages could be counted: undecodable bytes, unsupported versions,
	// snapshot chunks and acks, and the bus's inbound drops (a frame the bus
	// could not split counts as one) (raftbus_transport_dropped_envelopes_total).
	DroppedEnvelopes map[bus.DropReason]uint64
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
	// PeerRTT is the latest heartbeat round-trip time per peer Raft ID:
	// from handing a MsgHeartbeat to the bus to receiving the peer's
	// MsgHeartbeatResp. Only a leader sends heartbeats, so only a leader
	// has entries.
	PeerRTT map[uint64]time.Duration
	// LastHeard is when a validated envelope last arrived from each peer
	// Raft ID.
	LastHeard map[uint64]time.Time
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

// ActivePeerWindow is how recently a peer must have been heard from to
// count in raftbus_transport_active_peers. A leader hears every follower at
// least once per heartbeat interval; a follower hears only its leader.
const ActivePeerWindow = 5 * time.Second

// heartbeatExpiry bounds how long an unanswered heartbeat is remembered:
// a peer that answers nothing for that long is down, not slow, and its
// next answer is measured from a fresh heartbeat.
const heartbeatExpiry = 10 * time.Second

// peerLabel is the value of the "peer" label: the 16-digit hex Raft ID.
func peerLabel(id uint64) string {
	if id == 0 {
		return "unknown"
	}
	return ID(id).String()
}

// meter keeps the counters behind Stats and, if a Registerer was given,
// the Prometheus metrics. It is shared by the Send caller, the bus delivery
// goroutine and the snapshot goroutines, hence the mutex; every update is a
// few map operations.
type meter struct {
	mu    sync.Mutex
	stats Stats
	// hbSent is when the oldest unanswered heartbeat to each peer was
	// handed to the bus.
	hbSent map[uint64]time.Time
	// labelled are the peers with a "peer" series, so that the series of
	// removed peers can be deleted.
	labelled map[uint64]struct{}
	prom     *promMetrics // nil without a Registerer
	// sparse: series appear with their first event instead of at 0 up
	// front (a Host's groups: a thousand groups would hold ~46 zero
	// series each).
	sparse bool
	now    func() time.Time
	// peerKey maps a Raft ID to the key it is counted under where the ID
	// is not already known to be a member (0 for IDs the directory does
	// not know); nil counts every ID as itself.
	peerKey func(uint64) uint64
	// removed reports whether a Raft ID was removed from the cluster; nil
	// never forgets a peer.
	removed func(uint64) bool
}

func newMeter() *meter {
	return &meter{
		stats: Stats{
			Sent:              make(map[uint64]PeerStats),
			Received:          make(map[uint64]PeerStats),
			Dropped:           make(map[bus.DropReason]uint64),
			DroppedMessages:   make(map[bus.DropReason]uint64),
			DroppedEnvelopes:  make(map[bus.DropReason]uint64),
			Unreachable:       make(map[uint64]uint64),
			SnapshotsSent:     make(map[SnapshotResult]uint64),
			SnapshotsReceived: make(map[SnapshotResult]uint64),
			PeerRTT:           make(map[uint64]time.Duration),
			LastHeard:         make(map[uint64]time.Time),
		},
		hbSent:   make(map[uint64]time.Time),
		labelled: make(map[uint64]struct{}),
		now:      time.Now,
	}
}

// label returns the "peer" label of id and remembers that it has series.
// A member's first series come with its snapshot and unreachable counters
// at 0, so that rates and alerts over them work before the first event
// ("unknown", which any stranger maps to, gets only what happens).
// The caller holds m.mu and has checked m.prom.
func (m *meter) label(id uint64) string {
	l := peerLabel(id)
	if _, ok := m.labelled[id]; !ok && id != 0 && !m.sparse {
		m.labelled[id] = struct{}{}
		for _, r := range SnapshotResults {
			m.prom.snapSent.WithLabelValues(l, string(r))
			m.prom.snapRecv.WithLabelValues(l, string(r))
		}
		m.prom.unreachable.WithLabelValues(l)
	}
	return l
}

func (m *meter) sent(to uint64, msgs, bytes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.stats.Sent[to]
	ps.Messages += uint64(msgs)
	ps.Bytes += uint64(bytes)
	m.stats.Sent[to] = ps
	if p := m.prom; p != nil {
		l := m.label(to)
		if msgs > 0 {
			p.sentMsgs.WithLabelValues(l).Add(float64(msgs))
		}
		p.sentBytes.WithLabelValues(l).Add(float64(bytes))
	}
}

// heartbeatsSent notes the MsgHeartbeats among msgs, just handed to the
// bus for peer to, as the start of a round trip. An older heartbeat still
// unanswered keeps its time, so a slow peer shows its real delay rather
// than the heartbeat interval.
func (m *meter) heartbeatsSent(to uint64, msgs []*raftpb.Message) {
	hb := false
	for _, msg := range msgs {
		if msg.GetType() == raftpb.MsgHeartbeat {
			hb = true
			break
		}
	}
	if !hb {
		return
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.hbSent[to]; ok && now.Sub(t) < heartbeatExpiry {
		return
	}
	m.hbSent[to] = now
}

// heartbeatAnswered ends the round trip to a validated member from.
func (m *meter) heartbeatAnswered(from uint64) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.hbSent[from]
	if !ok {
		return
	}
	delete(m.hbSent, from)
	rtt := now.Sub(t)
	m.stats.PeerRTT[from] = rtt
	if p := m.prom; p != nil {
		p.rtt.WithLabelValues(m.label(from)).Observe(rtt.Seconds())
	}
}

// received counts traffic from a validated sender (a member; 0 for one
// that is no longer known).
func (m *meter) received(from uint64, msgs, bytes int, dirVersion uint64) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.stats.Received[from]
	ps.Messages += uint64(msgs)
	ps.Bytes += uint64(bytes)
	m.stats.Received[from] = ps
	if from != 0 {
		m.stats.LastHeard[from] = now
	}
	m.stats.PeerDirectoryVersion = max(m.stats.PeerDirectoryVersion, dirVersion)
	if p := m.prom; p != nil {
		l := m.label(from)
		if msgs > 0 {
			p.recvMsgs.WithLabelValues(l).Add(float64(msgs))
		}
		p.recvBytes.WithLabelValues(l).Add(float64(bytes))
	}
}

// dropped counts n Raft messages dropped for reason.
func (m *meter) dropped(reason bus.DropReason, n int) {
	m.mu.Lock()
	m.stats.Dropped[reason] += uint64(n)
	m.stats.DroppedMessages[reason] += uint64(n)
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.dropped.WithLabelValues(string(reason)).Add(float64(n))
	}
}

// droppedEnvelopes counts n payloads dropped for reason before their
// messages could be counted.
func (m *meter) droppedEnvelopes(reason bus.DropReason, n int) {
	m.mu.Lock()
	m.stats.Dropped[reason] += uint64(n)
	m.stats.DroppedEnvelopes[reason] += uint64(n)
	m.mu.Unlock()
	if p := m.prom; p != nil {
		p.droppedEnvelopes.WithLabelValues(string(reason)).Add(float64(n))
	}
}

func (m *meter) unreachable(id uint64) {
	if m.peerKey != nil {
		id = m.peerKey(id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Unreachable[id]++
	if p := m.prom; p != nil {
		p.unreachable.WithLabelValues(m.label(id)).Inc()
	}
}

func (m *meter) snapshotSent(to uint64, r SnapshotResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.SnapshotsSent[r]++
	if p := m.prom; p != nil {
		p.snapSent.WithLabelValues(m.label(to), string(r)).Inc()
	}
}

func (m *meter) snapshotReceived(from uint64, r SnapshotResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.SnapshotsReceived[r]++
	if p := m.prom; p != nil {
		p.snapRecv.WithLabelValues(m.label(from), string(r)).Inc()
	}
}

// forgetRemoved deletes everything kept per peer, series included, for
// the peers removed from the cluster: their Raft IDs are tombstoned
// forever, so their series would otherwise stay for the process's life.
func (m *meter) forgetRemoved() {
	if m.removed == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.labelled {
		if id == 0 || !m.removed(id) {
			continue
		}
		delete(m.labelled, id)
		if p := m.prom; p != nil {
			p.forget(peerLabel(id))
		}
	}
	for _, mp := range []map[uint64]PeerStats{m.stats.Sent, m.stats.Received} {
		for id := range mp {
			if id != 0 && m.removed(id) {
				delete(mp, id)
			}
		}
	}
	for id := range m.stats.Unreachable {
		if id != 0 && m.removed(id) {
			delete(m.stats.Unreachable, id)
		}
	}
	for id := range m.stats.PeerRTT {
		if m.removed(id) {
			delete(m.stats.PeerRTT, id)
		}
	}
	for id := range m.stats.LastHeard {
		if m.removed(id) {
			delete(m.stats.LastHeard, id)
		}
	}
	for id := range m.hbSent {
		if m.removed(id) {
			delete(m.hbSent, id)
		}
	}
}

// activePeers counts the peers heard from within ActivePeerWindow.
func (m *meter) activePeers() int {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, t := range m.stats.LastHeard {
		if now.Sub(t) < ActivePeerWindow && (m.removed == nil || !m.removed(id)) {
			n++
		}
	}
	return n
}

func (m *meter) snapshot() Stats {
	m.forgetRemoved()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Sent = maps.Clone(s.Sent)
	s.Received = maps.Clone(s.Received)
	s.Dropped = maps.Clone(s.Dropped)
	s.DroppedMessages = maps.Clone(s.DroppedMessages)
	s.DroppedEnvelopes = maps.Clone(s.DroppedEnvelopes)
	s.Unreachable = maps.Clone(s.Unreachable)
	s.SnapshotsSent = maps.Clone(s.SnapshotsSent)
	s.SnapshotsReceived = maps.Clone(s.SnapshotsReceived)
	s.PeerRTT = maps.Clone(s.PeerRTT)
	s.LastHeard = maps.Clone(s.LastHeard)
	return s
}

// promMetrics are the bridge's Prometheus metrics. Label values are
// bounded: "peer" is a 16-digit hex Raft ID of a member (never an
// incarnation; series of removed members are deleted), reasons and results
// are small fixed sets.
type promMetrics struct {
	sentMsgs, sentBytes *prometheus.CounterVec
	recvMsgs, recvBytes *prometheus.CounterVec
	dropped             *prometheus.CounterVec
	droppedEnvelopes    *prometheus.CounterVec
	unreachable         *prometheus.CounterVec
	snapSent, snapRecv  *prometheus.CounterVec
	rtt                 *prometheus.HistogramVec
	activePeers         prometheus.GaugeFunc
}

const (
	metricNamespace = "raftbus"
	metricSubsystem = "transport"
)

// rttBuckets span a local round trip (100µs) to a badly stalled one (~6.5s).
var rttBuckets = prometheus.ExponentialBuckets(0.0001, 2, 17)

func newPromMetrics(m *meter) *promMetrics {
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricNamespace, Subsystem: metricSubsystem, Name: name, Help: help,
		}, labels)
	}
	p := &promMetrics{
		sentMsgs:  counterVec("sent_messages_total", "Raft messages handed to the bus, by destination Raft ID.", "peer"),
		sentBytes: counterVec("sent_bytes_total", "Envelope bytes handed to the bus (snapshot chunks included), by destination Raft ID.", "peer"),
		recvMsgs:  counterVec("received_messages_total", "Validated Raft messages received, by source Raft ID (\"unknown\" for a sender that left the directory).", "peer"),
		recvBytes: counterVec("received_bytes_total", "Validated envelope bytes received, by source Raft ID (\"unknown\" for a sender that left the directory).", "peer"),
		dropped: counterVec("dropped_messages_total",
			"Raft messages dropped, by reason (envelopes whose messages could not be counted are in raftbus_transport_dropped_envelopes_total).", "reason"),
		droppedEnvelopes: counterVec("dropped_envelopes_total",
			"Inbound payloads dropped whole before their Raft messages could be counted (undecodable, unsupported version, snapshot chunks and acks, bus drops), by reason.", "reason"),
		unreachable: counterVec("unreachable_reports_total", "ReportUnreachable calls made to Raft, by Raft ID (\"unknown\" for IDs not in the directory).", "peer"),
		snapSent:    counterVec("snapshots_sent_total", "Snapshot transfers finished as sender, by destination Raft ID and result.", "peer", "result"),
		snapRecv:    counterVec("snapshots_received_total", "Snapshot transfers finished as receiver, by source Raft ID and result.", "peer", "result"),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricNamespace, Subsystem: metricSubsystem, Name: "peer_round_trip_time_seconds",
			Help:    "Heartbeat round-trip time to each follower, measured by the leader: from handing MsgHeartbeat to the bus to receiving MsgHeartbeatResp.",
			Buckets: rttBuckets,
		}, []string{"peer"}),
		activePeers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metricNamespace, Subsystem: metricSubsystem, Name: "active_peers",
			Help: "Peers heard from in the last 5 s. A leader hears every follower; a follower hears only its leader.",
		}, func() float64 { return float64(m.activePeers()) }),
	}
	if !m.sparse {
		for _, r := range DropReasons {
			p.dropped.WithLabelValues(string(r))
			p.droppedEnvelopes.WithLabelValues(string(r))
		}
	}
	return p
}

// forget deletes every series of one peer label.
func (p *promMetrics) forget(l string) {
	for _, v := range []*prometheus.CounterVec{p.sentMsgs, p.sentBytes, p.recvMsgs, p.recvBytes, p.unreachable} {
		v.DeleteLabelValues(l)
	}
	for _, v := range []*prometheus.CounterVec{p.snapSent, p.snapRecv} {
		v.DeletePartialMatch(prometheus.Labels{"peer": l})
	}
	p.rtt.DeleteLabelValues(l)
}

// peerCollectors are the collectors with a "peer" label.
func (p *promMetrics) peerCollectors() []prometheus.Collector {
	return []prometheus.Collector{p.sentMsgs, p.sentBytes, p.recvMsgs, p.recvBytes, p.unreachable, p.snapSent, p.snapRecv, p.rtt}
}

// collectors returns what the bridge registers: one collector for every
// per-peer metric, which deletes the series of removed peers before each
// scrape, and the rest as they are.
func (p *promMetrics) collectors(m *meter) []prometheus.Collector {
	return []prometheus.Collector{
		&peerCollector{m: m, cs: p.peerCollectors()},
		p.dropped, p.droppedEnvelopes, p.activePeers,
	}
}

// peerCollector gathers the per-peer metrics after forgetting removed
// peers, so a scrape never shows a removed member.
type peerCollector struct {
	m  *meter
	cs []prometheus.Collector
}

// Describe implements prometheus.Collector.
func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c.cs {
		x.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.forgetRemoved()
	for _, x := range c.cs {
		x.Collect(ch)
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
func hexID(id uint64) string { return ID(id).String() }
