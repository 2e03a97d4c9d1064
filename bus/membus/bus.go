package membus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/internal/counters"
	"github.com/raftbus/raftbus/bus/internal/inbound"
	"github.com/raftbus/raftbus/bus/internal/outq"
	"github.com/raftbus/raftbus/internal/wire"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxQueuePayloads  = 4096
	DefaultMaxQueueBytes     = 64 << 20
	DefaultMaxFrameBytes     = 1 << 20
	DefaultPendingMsgsLimit  = 65536
	DefaultPendingBytesLimit = 256 << 20
	DefaultIdleSenderTimeout = time.Minute
)

// minFrameBytes keeps MaxFrameBytes large enough for a frame header and
// a useful payload.
const minFrameBytes = 256

// Config configures one in-memory bus.
type Config struct {
	// Prefix is the first subject token(s). Default bus.DefaultPrefix.
	Prefix string
	// Cluster and Self are the cluster and incarnation this bus serves.
	// Both are required (not uuid.Nil).
	Cluster uuid.UUID
	Self    uuid.UUID
	// MaxQueuePayloads bounds each destination's send queue by payload
	// count. Default 4096.
	MaxQueuePayloads int
	// MaxQueueBytes bounds each destination's send queue by payload bytes.
	// Default 64 MiB; must be at least MaxFrameBytes.
	MaxQueueBytes int
	// MaxFrameBytes bounds an encoded frame, and so a single payload.
	// Default 1 MiB; at least 256.
	MaxFrameBytes int
	// PendingMsgsLimit and PendingBytesLimit bound the inbound buffer, like
	// a NATS subscription's pending limits; frames beyond them are dropped
	// and reported as bus.DropSlowConsumer. Defaults 65536 frames, 256 MiB.
	PendingMsgsLimit  int
	PendingBytesLimit int
	// IdleSenderTimeout is how long a destination's sender goroutine waits
	// for work before it exits. Default 1 minute.
	IdleSenderTimeout time.Duration
	// Logger receives drop warnings. Default: discard.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if err := wire.ValidatePrefix(c.Prefix); err != nil {
		return fmt.Errorf("membus: config: %w", err)
	}
	if err := wire.ValidateID(c.Cluster); err != nil {
		return fmt.Errorf("membus: config: cluster: %w", err)
	}
	if err := wire.ValidateID(c.Self); err != nil {
		return fmt.Errorf("membus: config: self: %w", err)
	}
	setDefault(&c.MaxQueuePayloads, DefaultMaxQueuePayloads)
	setDefault(&c.MaxQueueBytes, DefaultMaxQueueBytes)
	setDefault(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	setDefault(&c.PendingMsgsLimit, DefaultPendingMsgsLimit)
	setDefault(&c.PendingBytesLimit, DefaultPendingBytesLimit)
	if c.IdleSenderTimeout == 0 {
		c.IdleSenderTimeout = DefaultIdleSenderTimeout
	}
	switch {
	case c.MaxQueuePayloads < 0 || c.MaxQueueBytes < 0 || c.PendingMsgsLimit < 0 || c.PendingBytesLimit < 0:
		return fmt.Errorf("membus: config: queue and pending limits must be positive")
	case c.MaxFrameBytes < minFrameBytes:
		return fmt.Errorf("membus: config: MaxFrameBytes %d is below %d", c.MaxFrameBytes, minFrameBytes)
	case c.MaxQueueBytes < c.MaxFrameBytes:
		return fmt.Errorf("membus: config: MaxQueueBytes %d is below MaxFrameBytes %d", c.MaxQueueBytes, c.MaxFrameBytes)
	case c.IdleSenderTimeout < 0:
		return fmt.Errorf("membus: config: negative IdleSenderTimeout")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func setDefault(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

// Send errors, wrapped once so that a refused Send does not allocate.
var (
	errQueueFull = fmt.Errorf("membus: send: %w", bus.ErrQueueFull)
	errTooLarge  = fmt.Errorf("membus: send: %w", bus.ErrTooLarge)
	errClosed    = fmt.Errorf("membus: %w", bus.ErrClosed)
	errStarted   = fmt.Errorf("membus: %w", bus.ErrAlreadyStarted)
)

// Bus is an in-memory bus.Bus attached to a Network.
type Bus struct {
	net      *Network
	cfg      Config
	counters counters.Counters
	queues   *outq.Queues

	mu      sync.Mutex // guards started, closed, sub
	started bool
	closed  bool
	sub     *subscription

	isClosed atomic.Bool
	done     chan struct{} // closed by Close; stops the delivery goroutine
	stopped  chan struct{} // closed when Close has finished
	wg       sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// NewBus attaches a new bus for cfg.Self in cfg.Cluster to the network. It
// receives nothing until Start.
func (n *Network) NewBus(cfg Config) (*Bus, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bus{net: n, cfg: cfg, done: make(chan struct{}), stopped: make(chan struct{})}
	b.queues = outq.New(outq.Config{
		MaxPayloads:   cfg.MaxQueuePayloads,
		MaxBytes:      cfg.MaxQueueBytes,
		MaxFrameBytes: cfg.MaxFrameBytes,
		IdleTimeout:   cfg.IdleSenderTimeout,
		Publish:       b.publish,
		Subject: func(to uuid.UUID, kind bus.Kind) string {
			return wire.Subject(cfg.Prefix, cfg.Cluster, to, cfg.Self, kind)
		},
	})
	if err := n.attach(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Send queues data for incarnation to. It never blocks.
func (b *Bus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	err := b.queues.Enqueue(to, kind, data)
	if err == nil {
		return nil
	}
	switch err {
	case bus.ErrQueueFull:
		err = errQueueFull
	case bus.ErrTooLarge:
		err = errTooLarge
	case bus.ErrClosed:
		err = errClosed
	default:
		return fmt.Errorf("membus: send: %w", err) // invalid input, not a drop
	}
	b.counters.Drop(bus.ReasonOf(err), 1)
	return err
}

// publish is the outq.PublishFunc: it hands one frame to the network.
func (b *Bus) publish(ctx context.Context, f *outq.Frame) {
	if !b.net.waitUnstalled(ctx, f.To) {
		b.counters.Drop(bus.DropClosed, f.Payloads)
		return
	}
	b.counters.Sent(f.Payloads, len(f.Data))
	d, targets, held := b.net.route(b, f)
	if d.drop {
		b.counters.Drop(bus.DropPartitioned, f.Payloads)
		return
	}
	if held {
		return // the test delivers it (network_pump.go)
	}
	var at time.Time
	if d.delay > 0 {
		at = time.Now().Add(d.delay)
	}
	for _, in := range targets {
		// Copy, as a network would: the sender reuses its frame buffer, and
		// each delivery hands its bytes to a receiver that owns them.
		in.push(inFrame{subject: f.Subject, data: clone(f.Data), at: at}, d.reorder)
		if d.dup {
			in.push(inFrame{subject: f.Subject, data: clone(f.Data), at: at}, false)
		}
	}
}

func clone(b []byte) []byte { return append(make([]byte, 0, len(b)), b...) }

// Start subscribes to the bus's inbox subject and delivers to r from one
// goroutine until Close.
func (b *Bus) Start(r bus.Receiver) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	if b.started {
		return errStarted
	}
	b.started = true
	in := newInbox(b.cfg.PendingMsgsLimit, b.cfg.PendingBytesLimit)
	b.sub = b.net.subscribe(wire.InboxSubject(b.cfg.Prefix, b.cfg.Cluster, b.cfg.Self), in)
	h := inbound.New(b.cfg.Prefix, b.cfg.Cluster, b.cfg.Self, r, &b.counters, b.cfg.Logger)
	b.wg.Add(1)
	go b.deliver(in, h)
	return nil
}

// deliverBatch bounds how many frames the delivery goroutine takes from the
// inbox at once.
const deliverBatch = 64

// deliver is the delivery goroutine.
func (b *Bus) deliver(in *inbox, h *inbound.Handler) {
	defer b.wg.Done()
	defer close(in.stopped) // releases Network.Deliver waiting on frames left here
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	batch := make([]inFrame, 0, deliverBatch)
	for {
		var overflow int
		var next time.Time
		batch, overflow, next = in.take(time.Now(), batch[:0], deliverBatch)
		h.Dropped(uuid.Nil, bus.DropSlowConsumer, overflow, "")
		for i := range batch {
			select {
			case <-b.done:
				return
			default:
			}
			h.Frame(batch[i].subject, batch[i].data)
			if batch[i].done != nil {
				close(batch[i].done)
			}
			batch[i] = inFrame{}
		}
		if len(batch) == deliverBatch {
			continue // more may be due right now
		}
		var wakeAt <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
			wakeAt = timer.C
		}
		select {
		case <-b.done:
			return
		case <-in.wake:
		case <-wakeAt:
		}
		timer.Stop()
	}
}

// State reports StateConnected until Close, then StateClosed.
func (b *Bus) State() bus.State {
	if b.isClosed.Load() {
		return bus.StateClosed
	}
	return bus.StateConnected
}

// MaxPayload returns the largest payload Send accepts, derived from
// MaxFrameBytes; size Raft's MaxSizePerMsg below it.
func (b *Bus) MaxPayload() int { return wire.MaxPayload(b.cfg.MaxFrameBytes) }

// Stats returns a snapshot of the bus's counters and queue depths.
// Fault-injected losses are counted under bus.DropPartitioned.
func (b *Bus) Stats() bus.Stats {
	return b.counters.Snapshot(b.queues.Depths())
}

// Close stops the bus: queued payloads are discarded (counted as
// bus.DropClosed), the subscription is removed and Close waits for the
// sender and delivery goroutines. It is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.stopped // a concurrent Close may still be waiting
		return nil
	}
	b.closed = true
	b.isClosed.Store(true)
	sub := b.sub
	b.mu.Unlock()

	b.counters.Drop(bus.DropClosed, b.queues.Close())
	if sub != nil {
		b.net.unsubscribe(sub)
	}
	close(b.done)
	b.wg.Wait()
	b.net.detach(b)
	close(b.stopped)
	return nil
}
