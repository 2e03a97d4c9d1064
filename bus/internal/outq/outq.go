package outq

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Frame is one coalesced frame handed to a PublishFunc.
type Frame struct {
	To       uuid.UUID
	Kind     bus.Kind
	Subject  string // wire.Subject for To and Kind, built once per sender
	Data     []byte // the encoded frame; valid only until PublishFunc returns
	Payloads int    // number of payloads in Data
}

// PublishFunc puts one frame on the network. It is called from the
// destination's sender goroutine, one frame at a time per destination, and
// may be called concurrently for different destinations. ctx is cancelled
// when the queues are closed; a PublishFunc that can wait (the in-memory
// bus's stall) must give up when it is. The PublishFunc does its own
// accounting: whatever it returns, the payloads leave the queue.
type PublishFunc func(ctx context.Context, f *Frame)

// SubjectFunc returns the subject for frames of kind sent to to.
type SubjectFunc func(to uuid.UUID, kind bus.Kind) string

// Config configures Queues. All fields are required; the buses validate
// and default them before calling New.
type Config struct {
	MaxPayloads   int           // payloads queued per destination
	MaxBytes      int           // payload bytes queued per destination
	MaxFrameBytes int           // encoded frame size limit
	IdleTimeout   time.Duration // a sender with nothing to do retires after this; <= 0: never
	Publish       PublishFunc
	Subject       SubjectFunc
}

// Queues holds the send queues of one bus, one per destination.
type Queues struct {
	cfg        Config
	maxPayload int

	ctx    context.Context // cancelled by Close; passed to Publish
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards closed and the dests map. Lock order: mu, then queue.mu.
	mu     sync.RWMutex
	closed bool
	dests  map[uuid.UUID]*queue

	queued atomic.Int64 // payloads in all queues, for a gauge
}

// item is one queued payload.
type item struct {
	kind bus.Kind
	data []byte
}

// queue is the state shared between Enqueue callers and one sender goroutine.
type queue struct {
	to   uuid.UUID
	wake chan struct{} // capacity 1: "there may be work"

	mu       sync.Mutex
	items    []item // waiting for the sender
	payloads int    // items plus what the sender holds and has not published
	bytes    int
}

// New returns empty queues. Sender goroutines start on first use.
func New(cfg Config) *Queues {
	ctx, cancel := context.WithCancel(context.Background())
	return &Queues{
		cfg:        cfg,
		maxPayload: wire.MaxPayload(cfg.MaxFrameBytes),
		ctx:        ctx,
		cancel:     cancel,
		dests:      make(map[uuid.UUID]*queue),
	}
}

// Enqueue queues data for to. On error the payload was not queued and the
// error is one of bus.ErrTooLarge, bus.ErrQueueFull, bus.ErrClosed (all
// returned as is) or wraps bus.ErrInvalidToken.
func (qs *Queues) Enqueue(to uuid.UUID, kind bus.Kind, data []byte) error {
	if err := wire.ValidateID(to); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if err := wire.ValidateKind(kind); err != nil {
		return err
	}
	if len(data) > qs.maxPayload {
		return bus.ErrTooLarge
	}
	qs.mu.RLock()
	if qs.closed {
		qs.mu.RUnlock()
		return bus.ErrClosed
	}
	q := qs.dests[to]
	if q == nil {
		qs.mu.RUnlock()
		return qs.enqueueNew(to, kind, data)
	}
	err := qs.push(q, kind, data)
	qs.mu.RUnlock()
	return err
}

// enqueueNew is Enqueue's slow path: the destination has no queue (first
// use, or its sender retired), so one is created with its sender goroutine.
func (qs *Queues) enqueueNew(to uuid.UUID, kind bus.Kind, data []byte) error {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.closed {
		return bus.ErrClosed
	}
	q := qs.dests[to]
	if q == nil {
		q = &queue{to: to, wake: make(chan struct{}, 1)}
		qs.dests[to] = q
		qs.wg.Add(1)
		go qs.run(q)
	}
	return qs.push(q, kind, data)
}

// push appends to q if the bounds allow it and wakes q's sender.
// The caller holds qs.mu (read or write), which keeps q in the map.
func (qs *Queues) push(q *queue, kind bus.Kind, data []byte) error {
	q.mu.Lock()
	if q.payloads+1 > qs.cfg.MaxPayloads || q.bytes+len(data) > qs.cfg.MaxBytes {
		q.mu.Unlock()
		return bus.ErrQueueFull
	}
	q.items = append(q.items, item{kind: kind, data: data})
	q.payloads++
	q.bytes += len(data)
	q.mu.Unlock()
	qs.queued.Add(1)
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// Depths returns the current depth of every destination's queue.
func (qs *Queues) Depths() map[uuid.UUID]bus.QueueStats {
	qs.mu.RLock()
	defer qs.mu.RUnlock()
	out := make(map[uuid.UUID]bus.QueueStats, len(qs.dests))
	for to, q := range qs.dests {
		q.mu.Lock()
		out[to] = bus.QueueStats{Payloads: q.payloads, Bytes: q.bytes}
		q.mu.Unlock()
	}
	return out
}

// Queued returns the number of payloads in all queues.
func (qs *Queues) Queued() int { return int(qs.queued.Load()) }

// Close discards every queued payload, cancels publishing, waits for the
// sender goroutines to exit and returns how many payloads it discarded.
// Later calls return 0.
func (qs *Queues) Close() (discarded int) {
	qs.mu.Lock()
	if qs.closed {
		qs.mu.Unlock()
		return 0
	}
	qs.closed = true
	qs.mu.Unlock()
	qs.cancel()
	qs.wg.Wait()
	// The senders are gone; what is still counted was never published.
	qs.mu.Lock()
	defer qs.mu.Unlock()
	for to, q := range qs.dests {
		discarded += q.payloads
		delete(qs.dests, to)
	}
	qs.queued.Store(0)
	return discarded
}
