package raftbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Errors returned by Start.
var (
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("raftbridge: closed")
	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("raftbridge: already started")
)

// Bridge carries one local Raft node's messages over a bus.Bus and
// validates everything it receives before Raft sees it. See the package
// documentation for the contract.
type Bridge struct {
	cfg  Config
	self wire.Endpoint
	log  *slog.Logger

	meter   *meter
	drops   *dropLogger
	reports *reporter
	incs    incarnationIndex
	snapOut *snapSenders
	snapIn  *snapReceiver

	collectors []prometheus.Collector // registered on cfg.Registerer

	// ctx is cancelled by Close; it parents every context handed to Raft
	// and stops every goroutine.
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	// processCtx is the context Process calls share (processContext).
	processCtx atomic.Pointer[processDeadline]
	// inflight is read-locked by every delivery from the bus; Close
	// write-locks it once, so that when Close returns no delivery is still
	// calling into Raft.
	inflight sync.RWMutex

	lifeMu   sync.Mutex // guards started, stopping and every wg.Add
	started  bool
	stopping bool
	wg       sync.WaitGroup

	sendMu sync.Mutex // serialises Send; guards the scratch below
	groups []destGroup
	sizes  []int
}

// destGroup is the part of a Send batch for one destination, in order.
type destGroup struct {
	to   uint64
	msgs []*raftpb.Message
}

// New validates cfg, fills its defaults and returns a bridge that is not yet
// receiving: call Start. New registers the metrics on cfg.Registerer, if
// any; Close unregisters them.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bridge{
		cfg:   cfg,
		self:  wire.Endpoint{ID: cfg.ID, Incarnation: cfg.Incarnation},
		meter: newMeter(),
	}
	b.meter.peerKey = b.peerKey
	b.meter.sparse = cfg.sparseMetrics
	b.meter.removed = cfg.Directory.RemovedID
	b.log = cfg.Logger.With(
		slog.String("component", "raftbridge"),
		slog.String("cluster", cfg.Cluster.String()),
		slog.String("local_id", hexID(cfg.ID)),
		slog.String("local_incarnation", cfg.Incarnation.String()),
	)
	b.drops = newDropLogger(b.log, cfg.DropLogInterval)
	b.reports = newReporter(cfg.Raft, b.meter)
	b.snapOut = newSnapSenders(b)
	b.snapIn = newSnapReceiver(b)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.reports.spawn, b.reports.done = b.spawn, b.ctx.Done()
	if cfg.Registerer != nil {
		p := newPromMetrics(b.meter)
		cs := append(p.collectors(b.meter), newQueueCollector(b))
		if err := register(cfg.Registerer, cs...); err != nil {
			b.cancel()
			return nil, err
		}
		b.meter.prom = p
		b.collectors = cs
	}
	return b, nil
}

// Start starts the bridge's goroutines and registers it as the bus's
// receiver (bus.Start). It may be called once.
func (b *Bridge) Start() error {
	b.lifeMu.Lock()
	switch {
	case b.stopping:
		b.lifeMu.Unlock()
		return ErrClosed
	case b.started:
		b.lifeMu.Unlock()
		return ErrStarted
	}
	b.started = true
	b.lifeMu.Unlock()
	// The reporter and the snapshot receiver start their goroutines when
	// they have work: an idle group holds none.
	b.reports.start()
	if err := b.cfg.Bus.Start(receiver{b}); err != nil {
		return fmt.Errorf("raftbridge: start bus: %w", err)
	}
	return nil
}

// spawn runs f on a goroutine that Close waits for, unless the bridge is
// closing, in which case it reports false and does nothing.
func (b *Bridge) spawn(f func()) bool {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.stopping {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// Close stops the bridge: inbound payloads are dropped from now on, Raft
// calls in progress see their context cancelled, snapshot transfers are
// abandoned (without a report: the node is going away), and when Close
// returns every goroutine of the bridge has exited and no call into Raft is
// in progress or will be made. It does not close the bus. Close is
// idempotent.
func (b *Bridge) Close() error {
	b.lifeMu.Lock()
	first := !b.stopping
	b.stopping = true
	b.lifeMu.Unlock()
	if first {
		b.closed.Store(true)
		b.cancel()
		b.inflight.Lock() // wait for a delivery in progress (its context is cancelled)
		b.inflight.Unlock()
	}
	b.wg.Wait()
	if first {
		if r, ok := b.cfg.Bus.(releaser); ok {
			r.release()
		}
		for _, c := range b.collectors {
			b.cfg.Registerer.Unregister(c)
		}
	}
	return nil
}

// Stats returns a copy of the bridge's counters.
func (b *Bridge) Stats() Stats {
	s := b.meter.snapshot()
	s.Queues = b.queues()
	return s
}

// queues maps the bus's per-incarnation queue depths to Raft IDs.
func (b *Bridge) queues() map[uint64]bus.QueueStats {
	st := b.cfg.Bus.Stats()
	out := make(map[uint64]bus.QueueStats, len(st.Queues))
	for inc, q := range st.Queues {
		id := b.incs.lookup(inc)
		cur := out[id]
		cur.Payloads += q.Payloads
		cur.Bytes += q.Bytes
		out[id] = cur
	}
	return out
}

// Send sends Raft's outbound messages. Call it from the raft loop with
// Ready.Messages, after HardState and Entries of the same Ready are
// persisted. Send marshals every message before it returns (so the raft
// loop may reuse or change them afterwards, except for snapshot data, which
// is immutable by raft's contract) and never blocks: what cannot be queued
// on the bus is dropped, counted and reported to Raft. It is safe for
// concurrent use, but calls are serialised.
func (b *Bridge) Send(msgs []*raftpb.Message) {
	if len(msgs) == 0 {
		return
	}
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	if b.closed.Load() {
		b.meter.dropped(DropBridgeClosed, len(msgs))
		b.drops.warn(DropBridgeClosed, "raftbridge: Send after Close", func() []slog.Attr {
			return []slog.Attr{slog.Int("messages", len(msgs))}
		})
		return
	}
	groups := b.groupByDestination(msgs)
	for i := range groups {
		b.sendTo(groups[i].to, groups[i].msgs)
	}
	// Keep the scratch slices but not the messages they point to.
	for i := range groups {
		clear(groups[i].msgs)
		groups[i].msgs = groups[i].msgs[:0]
	}
	b.groups = groups[:0]
}

// groupByDestination splits msgs by destination, keeping each
// destination's messages in order. Messages that must never travel
// (raft-local types or targets, or addressed to this node) are dropped
// here.
func (b *Bridge) groupByDestination(msgs []*raftpb.Message) []destGroup {
	groups := b.groups[:0]
	for _, m := range msgs {
		to := m.GetTo()
		if to == raft.None || to == b.self.ID || raft.IsLocalMsgTarget(to) || raft.IsLocalMsg(m.GetType()) {
			b.dropOutbound(wire.Endpoint{ID: to}, []*raftpb.Message{m}, DropLocalMessage, nil)
			continue
		}
		i := 0
		for i < len(groups) && groups[i].to != to {
			i++
		}
		if i == len(groups) {
			if i < cap(groups) {
				groups = groups[:i+1]
				groups[i].to = to
			} else {
				groups = append(groups, destGroup{to: to})
			}
		}
		groups[i].msgs = append(groups[i].msgs, m)
	}
	b.groups = groups
	return groups
}

// resolve finds the incarnation holding Raft ID to. Only the directory
// names destinations: traffic for an ID it does not know is dropped.
func (b *Bridge) resolve(to uint64) (uuid.UUID, bus.DropReason) {
	dir := b.cfg.Directory
	inc, ok := dir.Incarnation(to)
	switch {
	case dir.RemovedID(to) || (ok && dir.RemovedIncarnation(inc)):
		return inc, DropTombstoned
	case !ok:
		return uuid.Nil, DropUnknownPeer
	}
	return inc, ""
}

func (b *Bridge) sendTo(to uint64, msgs []*raftpb.Message) {
	inc, reason := b.resolve(to)
	dst := wire.Endpoint{ID: to, Incarnation: inc}
	if reason != "" {
		b.dropOutbound(dst, msgs, reason, nil)
		return
	}
	b.incs.note(inc, to)
	// MsgSnap goes over the snapshot protocol; the rest in envelopes.
	n := 0
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgSnap {
			b.snapOut.enqueue(dst, m)
			continue
		}
		msgs[n] = m
		n++
	}
	if n > 0 {
		b.sendEnvelopes(dst, msgs[:n])
	}
}

// sendEnvelopes marshals msgs into as few envelopes as fit
// MaxEnvelopeBytes and queues them on the bus. Every message is measured
// once; the envelope buffer is allocated at its exact size (the bus takes
// ownership of it) and the messages are marshalled straight into it.
func (b *Bridge) sendEnvelopes(dst wire.Endpoint, msgs []*raftpb.Message) {
	sizes := b.sizes[:0]
	for _, m := range msgs {
		sizes = append(sizes, proto.Size(m))
	}
	b.sizes = sizes
	h := b.headerWithVersion(dst, b.cfg.Directory.Version())
	hdrLen := wire.HeaderLen(b.cfg.Group)
	for i := 0; i < len(msgs); {
		j, body := i, 0
		for j < len(msgs) && j-i < wire.MaxMessagesPerEnvelope {
			fs := wire.FramedSize(sizes[j])
			if j > i && hdrLen+wire.UvarintLen(uint64(j-i+1))+body+fs > b.cfg.MaxEnvelopeBytes {
				break
			}
			body += fs
			j++
		}
		batch := msgs[i:j]
		size := hdrLen + wire.UvarintLen(uint64(len(batch))) + body
		buf, err := wire.AppendEnvelopeSized(make([]byte, 0, size), &h, batch, sizes[i:j])
		switch {
		case err != nil:
			b.dropOutbound(dst, batch, DropEncode, err)
		default:
			if err := b.sendEnvelope(dst.Incarnation, batch, buf); err != nil {
				b.dropOutbound(dst, batch, bus.ReasonOf(err), err)
			} else {
				b.meter.sent(dst.ID, len(batch), len(buf))
				b.meter.heartbeatsSent(dst.ID, batch)
			}
		}
		i = j
	}
}

// header is the header of an envelope from this node to dst.
func (b *Bridge) header(dst wire.Endpoint) wire.Header {
	return wire.Header{Cluster: b.cfg.Cluster, Group: b.cfg.Group, From: b.self, To: dst}
}

func (b *Bridge) headerWithVersion(dst wire.Endpoint, version uint64) wire.Header {
	h := b.header(dst)
	h.DirectoryVersion = version
	return h
}

// sendEnvelope queues one message envelope on the bus. An envelope of plain
// heartbeats (or their responses) goes to a bus that coalesces them, when
// the bus can (a Host's group bus): waiting there costs a heartbeat at
// most the coalescing interval, far below an election timeout. A heartbeat
// that carries a read-index context is a linearizable read in progress and
// never waits.
func (b *Bridge) sendEnvelope(to uuid.UUID, msgs []*raftpb.Message, buf []byte) error {
	if c, ok := b.cfg.Bus.(coalescer); ok && plainHeartbeats(msgs) {
		return c.sendCoalesced(to, buf)
	}
	return b.cfg.Bus.Send(to, bus.KindMsg, buf)
}

// plainHeartbeats reports whether every message is a heartbeat or a
// heartbeat response without a context.
func plainHeartbeats(msgs []*raftpb.Message) bool {
	for _, m := range msgs {
		t := m.GetType()
		if (t != raftpb.MsgHeartbeat && t != raftpb.MsgHeartbeatResp) || len(m.GetContext()) != 0 {
			return false
		}
	}
	return true
}

// dropOutbound counts and logs outbound messages that will not be sent and
// tells Raft, through the reporter: unreachable for every drop of traffic
// meant for a peer, and SnapshotFailure for every MsgSnap among them.
func (b *Bridge) dropOutbound(dst wire.Endpoint, msgs []*raftpb.Message, reason bus.DropReason, err error) {
	b.meter.dropped(reason, len(msgs))
	if reason != DropLocalMessage {
		b.reports.reportUnreachable(dst.ID)
		for _, m := range msgs {
			if m.GetType() == raftpb.MsgSnap {
				b.reports.reportSnapshot(dst.ID, raft.SnapshotFailure)
			}
		}
	}
	b.drops.warn(reason, "raftbridge: dropped outbound raft messages", func() []slog.Attr {
		attrs := []slog.Attr{
			slog.String("peer_id", hexID(dst.ID)),
			slog.String("peer_incarnation", dst.Incarnation.String()),
			slog.Int("messages", len(msgs)),
			slog.String("type", msgs[0].GetType().String()),
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		return attrs
	})
}
