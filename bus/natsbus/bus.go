package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/internal/counters"
	"github.com/raftbus/raftbus/bus/internal/inbound"
	"github.com/raftbus/raftbus/bus/internal/outq"
	"github.com/raftbus/raftbus/internal/wire"
)

// startFlushTimeout bounds how long Start waits for the server to confirm
// the subscription, so that a peer's frame sent after Start returns is not
// published before the server knows where to route it.
const startFlushTimeout = 5 * time.Second

// publishWarnEvery limits publish-failure warnings.
const publishWarnEvery = time.Second

// Send and Start errors, wrapped once so that a refused Send does not
// allocate.
var (
	errQueueFull    = fmt.Errorf("natsbus: send: %w", bus.ErrQueueFull)
	errTooLarge     = fmt.Errorf("natsbus: send: %w", bus.ErrTooLarge)
	errNotConnected = fmt.Errorf("natsbus: send: %w", bus.ErrNotConnected)
	errClosed       = fmt.Errorf("natsbus: %w", bus.ErrClosed)
	errStarted      = fmt.Errorf("natsbus: %w", bus.ErrAlreadyStarted)
)

// Bus is a bus.Bus over core NATS.
type Bus struct {
	cfg        Config
	maxPayload int // wire.MaxPayload(cfg.MaxFrameBytes)
	nc         *nats.Conn
	log        *slog.Logger
	counters   counters.Counters
	queues     *outq.Queues
	metrics    *collector // nil without a Registerer

	connState     atomic.Int32 // bus.State of the connection, kept by monitor
	isClosed      atomic.Bool
	lastPubWarnNs atomic.Int64

	statusCh       chan nats.Status // owned by monitor; closed by RemoveStatusListener
	reconnectsSeen uint64           // owned by monitor

	// Inline publishing (Config.InlinePublish, inline.go).
	pubMu       sync.Mutex // held around every Publish of this bus's frames
	inlineFrame []byte     // frame buffer of inline publishes; guarded by pubMu
	inlineOffNs atomic.Int64
	inlined     atomic.Uint64   // payloads published inline, for tests and benchmarks
	writes      *trackingDialer // the connection's, if made with ConnTuning.Options
	destMu      sync.RWMutex
	dests       map[uuid.UUID]*dest // never shrinks; bounded by maxInlineDests

	mu      sync.Mutex // guards started, closed, sub
	started bool
	closed  bool
	sub     *nats.Subscription

	done    chan struct{} // closed by Close; stops the delivery goroutine
	stopped chan struct{} // closed when Close has finished
	wg      sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// New returns a bus for cfg.Self in cfg.Cluster on cfg.Conn. It sends
// right away but receives nothing until Start.
func New(cfg Config) (*Bus, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:        cfg,
		maxPayload: wire.MaxPayload(cfg.MaxFrameBytes),
		nc:         cfg.Conn,
		log:        cfg.Logger.With("component", "natsbus", "cluster", cfg.Cluster, "incarnation", cfg.Self),
		done:       make(chan struct{}),
		stopped:    make(chan struct{}),
		dests:      make(map[uuid.UUID]*dest),
	}
	if d, ok := cfg.Conn.Opts.CustomDialer.(*trackingDialer); ok {
		b.writes = d
	} else if cfg.InlinePublish {
		b.cfg.InlinePublish = false
		b.log.Info("InlinePublish needs a connection made with ConnTuning.Options; every payload is queued")
	}
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
	if cfg.Registerer != nil {
		b.metrics = newCollector(b)
		if err := cfg.Registerer.Register(b.metrics); err != nil {
			return nil, fmt.Errorf("natsbus: register metrics: %w", err)
		}
	}
	// Listen before reading the status, so no change falls in between.
	b.statusCh = b.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	b.connState.Store(int32(stateOf(b.nc.Status())))
	b.reconnectsSeen = b.nc.Stats().Reconnects
	b.wg.Add(1)
	go b.monitor()
	return b, nil
}

// stateOf maps a NATS connection status to a bus state.
func stateOf(s nats.Status) bus.State {
	switch s {
	case nats.CONNECTED, nats.DRAINING_SUBS:
		return bus.StateConnected
	case nats.CLOSED:
		return bus.StateClosed
	default: // CONNECTING, RECONNECTING, DISCONNECTED, DRAINING_PUBS
		return bus.StateDisconnected
	}
}

// monitor is the goroutine that follows the connection's status. It only
// reads the status events themselves (and the reconnect count right after
// a reconnect): a publish blocked on a full socket holds the connection's
// lock, and the monitor must not wait on it.
func (b *Bus) monitor() {
	defer b.wg.Done()
	for st := range b.statusCh {
		state := stateOf(st)
		b.connState.Store(int32(state))
		if st == nats.CONNECTED {
			if r := b.nc.Stats().Reconnects; r > b.reconnectsSeen {
				b.counters.Reconnected(int(r - b.reconnectsSeen))
				b.reconnectsSeen = r
			}
		}
		b.log.Info("nats connection state changed", "status", st.String(), "state", state.String())
	}
}

// Send queues data for incarnation to, or with Config.InlinePublish
// publishes it at once when nothing is queued for to (inline.go). It never
// waits for the network: while the connection is down it refuses with
// ErrNotConnected, since Raft retransmits anyway and stale messages are
// worth nothing.
func (b *Bus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	var err error
	switch {
	case b.isClosed.Load():
		err = errClosed
	case bus.State(b.connState.Load()) != bus.StateConnected:
		err = errNotConnected
	default:
		if b.cfg.InlinePublish {
			err = b.sendInline(to, kind, data)
		} else {
			err = b.queues.Enqueue(to, kind, data)
		}
		switch err {
		case nil:
			return nil
		case bus.ErrQueueFull:
			err = errQueueFull
		case bus.ErrTooLarge:
			err = errTooLarge
		case bus.ErrClosed:
			err = errClosed
		default:
			return fmt.Errorf("natsbus: send: %w", err) // invalid input, not a drop
		}
	}
	b.counters.Drop(bus.ReasonOf(err), 1)
	return err
}

// publish is the outq.PublishFunc. nats.go copies the frame into its write
// buffer, so the sender may reuse it as soon as Publish returns. A publish
// blocks only when nats.go writes to a full socket, or waits for its lock
// while its flusher does, which is what makes the queue fill.
func (b *Bus) publish(_ context.Context, f *outq.Frame) {
	if !b.cfg.InlinePublish {
		b.publishFrame(f.To, f.Kind, f.Subject, f.Data, f.Payloads)
		return
	}
	b.pubMu.Lock()
	b.publishFrame(f.To, f.Kind, f.Subject, f.Data, f.Payloads)
	b.pubMu.Unlock()
	b.published(f.To, f.Payloads)
}

// publishFrame publishes one frame and accounts for it. The caller holds
// pubMu. A slow publish (a full socket) turns inline publishing off for a
// while.
func (b *Bus) publishFrame(to uuid.UUID, kind bus.Kind, subject string, data []byte, payloads int) {
	var err error
	if b.cfg.InlinePublish {
		start := time.Now()
		err = b.nc.Publish(subject, data)
		if err == nil {
			b.writes.buffered()
		}
		if now := time.Now(); now.Sub(start) >= slowPublish {
			b.inlineOffNs.Store(now.Add(inlineBackoff).UnixNano())
		}
	} else {
		err = b.nc.Publish(subject, data)
	}
	if err != nil {
		b.counters.Drop(bus.DropPublishFailed, payloads)
		now := time.Now().UnixNano()
		last := b.lastPubWarnNs.Load()
		if now-last >= int64(publishWarnEvery) && b.lastPubWarnNs.CompareAndSwap(last, now) {
			b.log.Warn("publish failed; frame dropped", "to", to, "kind", string(kind),
				"payloads", payloads, "bytes", len(data), "err", err)
		}
		return
	}
	b.counters.Sent(payloads, len(data))
}

// Start subscribes to the bus's inbox subject,
// <prefix>.<cluster>.<self>.>, with the configured pending limits and
// delivers to r from one goroutine until Close. If the connection is up it
// waits (up to 5 s) for the server to confirm the subscription.
func (b *Bus) Start(r bus.Receiver) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	if b.started {
		return errStarted
	}
	subject := wire.InboxSubject(b.cfg.Prefix, b.cfg.Cluster, b.cfg.Self)
	sub, err := b.nc.SubscribeSync(subject)
	if err != nil {
		return fmt.Errorf("natsbus: subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(b.cfg.PendingMsgsLimit, b.cfg.PendingBytesLimit); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("natsbus: set pending limits: %w", err)
	}
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(startFlushTimeout); err != nil {
			// Not fatal: nats.go (re)sends the subscription when it can.
			b.log.Warn("subscription not confirmed by the server", "subject", subject, "err", err)
		}
	}
	b.started = true
	b.sub = sub
	h := inbound.New(b.cfg.Prefix, b.cfg.Cluster, b.cfg.Self, r, &b.counters, b.log)
	b.wg.Add(1)
	go b.receive(sub, h)
	return nil
}

// State reports the connection's state, or StateClosed after Close.
func (b *Bus) State() bus.State {
	if b.isClosed.Load() {
		return bus.StateClosed
	}
	return bus.State(b.connState.Load())
}

// MaxPayload returns the largest payload Send accepts, derived from
// MaxFrameBytes; size Raft's MaxSizePerMsg below it.
func (b *Bus) MaxPayload() int { return wire.MaxPayload(b.cfg.MaxFrameBytes) }

// Stats returns a snapshot of the bus's counters and queue depths.
func (b *Bus) Stats() bus.Stats {
	return b.counters.Snapshot(b.queues.Depths())
}

// Close discards queued payloads (counted as bus.DropClosed), unsubscribes,
// unregisters the metrics and waits for the bus's goroutines. The NATS
// connection stays open. A sender blocked in a publish on a full socket is
// waited for; nats.go bounds that wait by its FlusherTimeout. Close is
// idempotent.
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

	close(b.done)
	b.counters.Drop(bus.DropClosed, b.queues.Close())
	if sub != nil {
		// Wakes the delivery goroutine. Fails harmlessly if the connection
		// was closed by its owner, which ended the subscription already.
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			b.log.Warn("unsubscribe failed", "err", err)
		}
	}
	b.nc.RemoveStatusListener(b.statusCh)
	b.wg.Wait()
	if b.metrics != nil {
		b.cfg.Registerer.Unregister(b.metrics)
	}
	close(b.stopped)
	return nil
}
