package raftbridge

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// coalescer state of a Host: heartbeat envelopes waiting per destination.
// A Send that finds a destination's pending envelopes over the byte or
// count bound flushes that destination at once; the loop flushes all every
// interval.
type heartbeatCoalescer struct {
	h       *Host
	mu      sync.Mutex
	pending map[uuid.UUID]*pendingBeats
}

type pendingBeats struct {
	envs  [][]byte
	bytes int
}

func (c *heartbeatCoalescer) init(h *Host) {
	c.h = h
	c.pending = make(map[uuid.UUID]*pendingBeats)
}

func (c *heartbeatCoalescer) add(to uuid.UUID, env []byte) error {
	c.mu.Lock()
	p := c.pending[to]
	if p == nil {
		if len(c.pending) >= maxCoalescedDestinations {
			c.mu.Unlock()
			return c.h.cfg.Bus.Send(to, bus.KindMsg, env)
		}
		p = &pendingBeats{}
		c.pending[to] = p
	}
	p.envs = append(p.envs, env)
	p.bytes += wire.FramedSize(len(env))
	c.h.stats.coalescedEnvs.Add(1)
	var full *pendingBeats
	if p.bytes >= maxCoalescedBytes || len(p.envs) >= wire.MaxBatchEnvelopes {
		full = p
		delete(c.pending, to)
	}
	c.mu.Unlock()
	if full != nil {
		c.send(to, full)
	}
	return nil
}

func (c *heartbeatCoalescer) run(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.flush()
		case <-stop:
			return
		}
	}
}

func (c *heartbeatCoalescer) flush() {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	all := c.pending
	c.pending = make(map[uuid.UUID]*pendingBeats, len(all))
	c.mu.Unlock()
	for to, p := range all {
		c.send(to, p)
	}
}

// send puts one destination's waiting envelopes in one payload: the
// envelope itself when it waited alone, else a batch.
func (c *heartbeatCoalescer) send(to uuid.UUID, p *pendingBeats) {
	payload := p.envs[0]
	if len(p.envs) > 1 {
		var err error
		payload, err = wire.AppendBatch(make([]byte, 0, wire.BatchSize(p.envs)), p.envs)
		if err != nil { // only with more than MaxBatchEnvelopes, which add prevents
			c.h.stats.outDropped(DropEncode, 1)
			return
		}
	}
	if err := c.h.cfg.Bus.Send(to, bus.KindMsg, payload); err != nil {
		c.h.stats.outDropped(bus.ReasonOf(err), 1)
		return
	}
	c.h.stats.coalescedFrames.Add(1)
}

// liveness records when each tracked peer host was last heard from.
type liveness struct {
	mu   sync.RWMutex
	last map[uuid.UUID]*atomic.Int64 // unix nanoseconds; 0: never
}

func (l *liveness) init() { l.last = make(map[uuid.UUID]*atomic.Int64) }

func (l *liveness) track(peers []uuid.UUID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := make(map[uuid.UUID]*atomic.Int64, len(peers))
	for _, p := range peers {
		if t := l.last[p]; t != nil {
			next[p] = t
		} else {
			next[p] = new(atomic.Int64)
		}
	}
	l.last = next
}

func (l *liveness) heard(from uuid.UUID) {
	l.mu.RLock()
	t := l.last[from]
	l.mu.RUnlock()
	if t != nil {
		t.Store(time.Now().UnixNano())
	}
}

func (l *liveness) lastHeard(peer uuid.UUID) (time.Time, bool) {
	l.mu.RLock()
	t := l.last[peer]
	l.mu.RUnlock()
	if t == nil || t.Load() == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, t.Load()), true
}

func (l *liveness) peers() []uuid.UUID {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]uuid.UUID, 0, len(l.last))
	for p := range l.last {
		out = append(out, p)
	}
	return out
}

// hostCounters are a Host's counters, also exported as metrics.
type hostCounters struct {
	mu              sync.Mutex
	in, out         map[bus.DropReason]uint64
	coalescedEnvs   atomic.Uint64
	coalescedFrames atomic.Uint64
	pings           atomic.Uint64
	pingsIn         atomic.Uint64
}

func (s *hostCounters) inDropped(r bus.DropReason, n int)  { s.count(&s.in, r, n) }
func (s *hostCounters) outDropped(r bus.DropReason, n int) { s.count(&s.out, r, n) }

func (s *hostCounters) count(m *map[bus.DropReason]uint64, r bus.DropReason, n int) {
	s.mu.Lock()
	if *m == nil {
		*m = make(map[bus.DropReason]uint64)
	}
	(*m)[r] += uint64(n)
	s.mu.Unlock()
}

func (s *hostCounters) snapshot() HostStats {
	s.mu.Lock()
	st := HostStats{Dropped: make(map[bus.DropReason]uint64, len(s.in)), OutDropped: make(map[bus.DropReason]uint64, len(s.out))}
	for r, n := range s.in {
		st.Dropped[r] = n
	}
	for r, n := range s.out {
		st.OutDropped[r] = n
	}
	s.mu.Unlock()
	st.CoalescedEnvelopes = s.coalescedEnvs.Load()
	st.CoalescedFrames = s.coalescedFrames.Load()
	st.PingsSent = s.pings.Load()
	st.PingsReceived = s.pingsIn.Load()
	return st
}

var (
	hostDroppedDesc = prometheus.NewDesc("raftbus_host_dropped_payloads_total",
		"Inbound payloads a host dropped before any group's bridge saw them, by reason (unknown_group: no bridge of that group on this host).",
		[]string{"reason"}, nil)
	hostOutDroppedDesc = prometheus.NewDesc("raftbus_host_outbound_dropped_payloads_total",
		"Coalesced heartbeat frames and host pings the bus refused, by reason.", []string{"reason"}, nil)
	hostCoalescedDesc = prometheus.NewDesc("raftbus_host_coalesced_heartbeat_envelopes_total",
		"Heartbeat envelopes that waited to share a frame with other groups' heartbeats.", nil, nil)
	hostCoalescedFramesDesc = prometheus.NewDesc("raftbus_host_coalesced_heartbeat_frames_total",
		"Payloads the coalesced heartbeat envelopes left in.", nil, nil)
	hostPingsDesc = prometheus.NewDesc("raftbus_host_pings_sent_total",
		"Host pings sent to peer hosts (liveness while groups are quiescent).", nil, nil)
	hostPingsInDesc = prometheus.NewDesc("raftbus_host_pings_received_total",
		"Host pings received from peer hosts.", nil, nil)
)

func (s *hostCounters) collectors() []prometheus.Collector {
	return []prometheus.Collector{hostCollector{s}}
}

type hostCollector struct{ s *hostCounters }

func (c hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hostDroppedDesc, hostOutDroppedDesc, hostCoalescedDesc, hostCoalescedFramesDesc, hostPingsDesc, hostPingsInDesc} {
		ch <- d
	}
}

func (c hostCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.snapshot()
	for _, r := range DropReasons {
		ch <- prometheus.MustNewConstMetric(hostDroppedDesc, prometheus.CounterValue, float64(st.Dropped[r]), string(r))
	}
	ch <- prometheus.MustNewConstMetric(hostDroppedDesc, prometheus.CounterValue, float64(st.Dropped[DropUnknownGroup]), string(DropUnknownGroup))
	for _, r := range []bus.DropReason{bus.DropQueueFull, bus.DropTooLarge, bus.DropNotConnected, bus.DropPublishFailed, bus.DropClosed, DropEncode} {
		ch <- prometheus.MustNewConstMetric(hostOutDroppedDesc, prometheus.CounterValue, float64(st.OutDropped[r]), string(r))
	}
	ch <- prometheus.MustNewConstMetric(hostCoalescedDesc, prometheus.CounterValue, float64(st.CoalescedEnvelopes))
	ch <- prometheus.MustNewConstMetric(hostCoalescedFramesDesc, prometheus.CounterValue, float64(st.CoalescedFrames))
	ch <- prometheus.MustNewConstMetric(hostPingsDesc, prometheus.CounterValue, float64(st.PingsSent))
	ch <- prometheus.MustNewConstMetric(hostPingsInDesc, prometheus.CounterValue, float64(st.PingsReceived))
}
