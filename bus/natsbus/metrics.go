package natsbus

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/internal/counters"
)

// collector exports a bus's counters as raftbus_bus_* metrics. It reads the
// counters the bus keeps anyway at scrape time, so metrics cost nothing on
// the hot path. Labels never carry identities: incarnation UUIDs are
// unbounded over a cluster's life. dropped_total has a series for every
// reason a NATS bus can produce from the first scrape on, at 0; the
// in-memory bus's fault-injection reason is not among them.
type collector struct {
	b *Bus

	framesSent, payloadsSent, bytesSent          *prometheus.Desc
	framesReceived, payloadsReceived, bytesRecvd *prometheus.Desc
	dropped, queued, reconnects, connected       *prometheus.Desc
}

func newCollector(b *Bus) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("raftbus", "bus", name), help, labels, nil)
	}
	return &collector{
		b:                b,
		framesSent:       d("frames_sent_total", "NATS messages (frames) published."),
		payloadsSent:     d("payloads_sent_total", "Payloads published, coalesced into frames."),
		bytesSent:        d("bytes_sent_total", "Frame bytes published."),
		framesReceived:   d("frames_received_total", "NATS messages (frames) received on the inbox subscription."),
		payloadsReceived: d("payloads_received_total", "Payloads delivered to the receiver."),
		bytesRecvd:       d("bytes_received_total", "Frame bytes received."),
		dropped:          d("dropped_total", "Payloads (or frames, when the count is unknown) discarded, by reason.", "reason"),
		queued:           d("queued_payloads", "Payloads waiting in the send queues, all destinations together."),
		reconnects:       d("reconnects_total", "Reconnections of the NATS connection seen by the bus."),
		connected:        d("connected", "1 while the NATS connection is up, else 0."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.framesSent, c.payloadsSent, c.bytesSent,
		c.framesReceived, c.payloadsReceived, c.bytesRecvd, c.dropped, c.queued, c.reconnects, c.connected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.counters.Snapshot(nil)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.framesSent, s.SentFrames)
	counter(c.payloadsSent, s.SentPayloads)
	counter(c.bytesSent, s.SentBytes)
	counter(c.framesReceived, s.ReceivedFrames)
	counter(c.payloadsReceived, s.ReceivedPayloads)
	counter(c.bytesRecvd, s.ReceivedBytes)
	for _, r := range counters.Reasons {
		if r == bus.DropPartitioned {
			continue // only the in-memory bus injects faults
		}
		counter(c.dropped, s.Dropped[r], string(r))
	}
	counter(c.reconnects, s.Reconnects)
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(c.b.queues.Queued()))
	up := 0.0
	if c.b.State() == bus.StateConnected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, up)
}
