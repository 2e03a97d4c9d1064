package bustest

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
)

// DropEvent is one Receiver.Dropped call.
type DropEvent struct {
	From   uuid.UUID
	Reason bus.DropReason
	N      int
}

// Collector is a bus.Receiver that records everything it is given. It is
// safe for concurrent use, so tests can inspect it while a bus delivers.
type Collector struct {
	mu         sync.Mutex
	deliveries []bus.Delivery
	drops      []DropEvent
}

var _ bus.Receiver = (*Collector)(nil)

// NewCollector returns an empty Collector.
func NewCollector() *Collector { return &Collector{} }

// Deliver records d.
func (c *Collector) Deliver(d bus.Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deliveries = append(c.deliveries, d)
}

// Dropped records a drop report.
func (c *Collector) Dropped(from uuid.UUID, reason bus.DropReason, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drops = append(c.drops, DropEvent{From: from, Reason: reason, N: n})
}

// Deliveries returns a copy of the deliveries so far, in delivery order.
func (c *Collector) Deliveries() []bus.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bus.Delivery(nil), c.deliveries...)
}

// Count returns the number of deliveries so far.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.deliveries)
}

// Drops returns a copy of the drop reports so far.
func (c *Collector) Drops() []DropEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]DropEvent(nil), c.drops...)
}

// DroppedCount sums the reported drops for reason.
func (c *Collector) DroppedCount(reason bus.DropReason) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.drops {
		if d.Reason == reason {
			n += d.N
		}
	}
	return n
}

// WaitFor polls cond until it holds, failing t after timeout. It is the
// only way these tests wait: never a bare sleep.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 50 * time.Microsecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
}
