package main

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// inlineBus is an EXPERIMENT, not part of raftbus: a minimal bus.Bus over
// core NATS that publishes from the caller of Send (no per-destination
// sender goroutine, no queue) and delivers from the subscription's callback.
// It speaks natsbus's subjects and frame format, so raftbridge runs on it
// unchanged. The cluster benchmark runs it as transport "raftbus-xinline"
// (--exp-inline-bus) to measure how much of raftbus's latency comes from
// natsbus's send queue hand-off, as opposed to the extra hop through the
// NATS server, which no bus design can remove.
//
// It gives up what natsbus's queue is for: Send may block while nats.go
// writes a full buffer to the socket (it never does at these rates on
// loopback), and there is no per-destination bound. Do not use it outside
// the benchmark.
type inlineBus struct {
	nc      *nats.Conn
	prefix  string
	cluster uuid.UUID
	self    uuid.UUID

	subjects sync.Map // destination+kind -> subject
	closed   atomic.Bool
	sent     atomic.Uint64
	frames   atomic.Uint64
	bytes    atomic.Uint64

	mu  sync.Mutex
	sub *nats.Subscription
}

var _ bus.Bus = (*inlineBus)(nil)

func newInlineBus(nc *nats.Conn, cluster, self uuid.UUID) *inlineBus {
	return &inlineBus{nc: nc, prefix: bus.DefaultPrefix, cluster: cluster, self: self}
}

type subjectKey struct {
	to   uuid.UUID
	kind bus.Kind
}

var errInlineClosed = fmt.Errorf("inline bus: %w", bus.ErrClosed)

// Send frames data alone and publishes it now.
func (b *inlineBus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	if b.closed.Load() {
		return errInlineClosed
	}
	k := subjectKey{to, kind}
	subj, ok := b.subjects.Load(k)
	if !ok {
		subj, _ = b.subjects.LoadOrStore(k, wire.Subject(b.prefix, b.cluster, to, b.self, kind))
	}
	frame := wire.AppendFrame(make([]byte, 0, wire.FrameOverhead+wire.FrameSize(len(data))), [][]byte{data})
	if err := b.nc.Publish(subj.(string), frame); err != nil {
		return fmt.Errorf("inline bus: %w: %w", bus.ErrNotConnected, err)
	}
	b.sent.Add(1)
	b.frames.Add(1)
	b.bytes.Add(uint64(len(frame)))
	return nil
}

// Start subscribes to the inbox and delivers from the callback goroutine.
func (b *inlineBus) Start(r bus.Receiver) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sub != nil {
		return bus.ErrAlreadyStarted
	}
	sub, err := b.nc.Subscribe(wire.InboxSubject(b.prefix, b.cluster, b.self), func(m *nats.Msg) {
		cluster, dst, src, kind, err := wire.ParseSubject(b.prefix, m.Subject)
		if err != nil || cluster != b.cluster || dst != b.self {
			r.Dropped(uuid.Nil, bus.DropBadSubject, 1)
			return
		}
		if err := wire.DecodeFrame(m.Data, func(p []byte) {
			r.Deliver(bus.Delivery{Cluster: cluster, To: dst, From: src, Kind: kind, Data: p})
		}); err != nil {
			r.Dropped(src, bus.DropBadFrame, 1)
		}
	})
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(65536, 256<<20); err != nil {
		return err
	}
	b.sub = sub
	return b.nc.Flush()
}

func (b *inlineBus) State() bus.State {
	switch {
	case b.closed.Load():
		return bus.StateClosed
	case b.nc.IsConnected():
		return bus.StateConnected
	}
	return bus.StateDisconnected
}

func (b *inlineBus) Stats() bus.Stats {
	return bus.Stats{SentPayloads: b.sent.Load(), SentFrames: b.frames.Load(), SentBytes: b.bytes.Load()}
}

func (b *inlineBus) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sub != nil {
		if err := b.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			return err
		}
	}
	return nil
}
