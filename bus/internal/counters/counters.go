package counters

import (
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
)

// Reasons lists every bus.DropReason, in a fixed order.
var Reasons = [...]bus.DropReason{
	bus.DropQueueFull,
	bus.DropTooLarge,
	bus.DropNotConnected,
	bus.DropPublishFailed,
	bus.DropClosed,
	bus.DropBadFrame,
	bus.DropBadSubject,
	bus.DropSlowConsumer,
	bus.DropPartitioned,
}

func reasonIndex(r bus.DropReason) int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	// An unknown reason is a programming error inside raftbus; count it as a
	// publish failure rather than lose it.
	return 3
}

// Counters are the traffic counters of one bus. The zero value is ready.
type Counters struct {
	sentFrames   atomic.Uint64
	sentPayloads atomic.Uint64
	sentBytes    atomic.Uint64
	// The receive side is written by another goroutine; keep it off the
	// send side's cache line.
	_            [64]byte
	recvFrames   atomic.Uint64
	recvPayloads atomic.Uint64
	recvBytes    atomic.Uint64
	_            [64]byte
	reconnects   atomic.Uint64
	dropped      [len(Reasons)]atomic.Uint64
}

// Sent counts one frame of payloads payloads and bytes bytes handed to the network.
func (c *Counters) Sent(payloads, bytes int) {
	c.sentFrames.Add(1)
	c.sentPayloads.Add(uint64(payloads))
	c.sentBytes.Add(uint64(bytes))
}

// ReceivedFrame counts one inbound frame of bytes bytes.
func (c *Counters) ReceivedFrame(bytes int) {
	c.recvFrames.Add(1)
	c.recvBytes.Add(uint64(bytes))
}

// ReceivedPayloads counts n payloads delivered to the receiver.
func (c *Counters) ReceivedPayloads(n int) {
	c.recvPayloads.Add(uint64(n))
}

// Drop counts n payloads (or frames) discarded for reason r.
func (c *Counters) Drop(r bus.DropReason, n int) {
	if n > 0 {
		c.dropped[reasonIndex(r)].Add(uint64(n))
	}
}

// Reconnected counts n reconnections.
func (c *Counters) Reconnected(n int) {
	if n > 0 {
		c.reconnects.Add(uint64(n))
	}
}

// Dropped returns the count for one reason.
func (c *Counters) Dropped(r bus.DropReason) uint64 {
	return c.dropped[reasonIndex(r)].Load()
}

// Snapshot returns the counters as a bus.Stats with the given queue depths.
// Dropped holds only the reasons with a non-zero count.
func (c *Counters) Snapshot(queues map[uuid.UUID]bus.QueueStats) bus.Stats {
	s := bus.Stats{
		SentPayloads:     c.sentPayloads.Load(),
		SentFrames:       c.sentFrames.Load(),
		SentBytes:        c.sentBytes.Load(),
		ReceivedPayloads: c.recvPayloads.Load(),
		ReceivedFrames:   c.recvFrames.Load(),
		ReceivedBytes:    c.recvBytes.Load(),
		Dropped:          make(map[bus.DropReason]uint64),
		Queues:           queues,
		Reconnects:       c.reconnects.Load(),
	}
	for i, r := range Reasons {
		if n := c.dropped[i].Load(); n > 0 {
			s.Dropped[r] = n
		}
	}
	return s
}
