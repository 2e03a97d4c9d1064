package raftbridge

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/grouplabel"
	"github.com/raftbus/raftbus/internal/wire"
)

// Defaults of HostConfig.
const (
	// DefaultCoalesceInterval is how long a plain heartbeat may wait for
	// others to the same host: half the default 100 ms Raft tick, as
	// CockroachDB does, so heartbeats of every group that ticked together
	// leave in one frame.
	DefaultCoalesceInterval = 50 * time.Millisecond
	// DefaultMaxGroups bounds the groups of one host.
	DefaultMaxGroups = 1 << 16
	// maxCoalescedBytes flushes a destination's heartbeats early, well
	// below any bus frame limit.
	maxCoalescedBytes = 256 << 10
	// maxCoalescedDestinations bounds the destinations heartbeats wait
	// for; beyond it they are sent at once.
	maxCoalescedDestinations = 4096
)

// ErrGroupExists is returned by Host.NewBridge for a group that already has
// a bridge on the host.
var ErrGroupExists = errors.New("raftbridge: group already has a bridge on this host")

// HostConfig configures a Host.
type HostConfig struct {
	// Cluster and Incarnation are the host's: every group's bridge on it
	// belongs to this cluster and speaks as this incarnation. Required.
	Cluster     uuid.UUID
	Incarnation uuid.UUID
	// Bus carries every group's envelopes. Required; the host calls Start
	// on it and never Close.
	Bus bus.Bus
	// CoalesceInterval is the longest a plain heartbeat (or response)
	// waits to share a frame with the other groups' heartbeats to the
	// same host. Default DefaultCoalesceInterval; negative disables
	// coalescing.
	CoalesceInterval time.Duration
	// MaxGroups bounds the bridges of the host. Default DefaultMaxGroups.
	MaxGroups int
	// Logger receives host-level drop warnings. Default: discard.
	Logger *slog.Logger
	// Registerer receives the host's metrics; each group's bridge
	// registers its own on it with a "group" label. Default: none.
	Registerer prometheus.Registerer
	// DropLogInterval: as Config.DropLogInterval. Default 10 s.
	DropLogInterval time.Duration
}

func (c *HostConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if err := wire.ValidateID(c.Cluster); err != nil {
		return bad("Cluster: %v", err)
	}
	if err := wire.ValidateID(c.Incarnation); err != nil {
		return bad("Incarnation: %v", err)
	}
	switch {
	case c.Bus == nil:
		return bad("Bus is required")
	case c.MaxGroups < 0:
		return bad("MaxGroups must not be negative")
	case c.DropLogInterval < 0:
		return bad("DropLogInterval must not be negative")
	}
	if c.CoalesceInterval == 0 {
		c.CoalesceInterval = DefaultCoalesceInterval
	}
	if c.MaxGroups == 0 {
		c.MaxGroups = DefaultMaxGroups
	}
	if c.DropLogInterval == 0 {
		c.DropLogInterval = DefaultDropLogInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Host carries many Raft groups of one incarnation over one bus: one
// subscription, one send queue per destination host, frames that hold
// every group's envelopes for that host. Each group has its own Bridge
// (NewBridge), with its own directory, tombstones, snapshots and metrics,
// and validates everything addressed to it exactly as a single-group
// bridge does; the host only reads the group from an envelope's header to
// find that bridge, and drops envelopes of groups it does not hold
// (unknown_group).
//
// The host also coalesces plain heartbeats per destination (see
// HostConfig.CoalesceInterval), sends host pings (Ping) and tells when a
// peer host was last heard from (LastHeard), which is what lets idle
// groups stop heartbeating altogether (the node package's quiescence).
type Host struct {
	cfg   HostConfig
	log   *slog.Logger
	drops *dropLogger

	mu     sync.RWMutex
	groups map[uint64]*groupBus
	closed bool

	live liveness
	co   heartbeatCoalescer

	stats      hostCounters
	collectors []prometheus.Collector

	startOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewHost validates cfg and returns a host that is not yet receiving:
// create the groups' bridges, then call Start.
func NewHost(cfg HostConfig) (*Host, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &Host{
		cfg:    cfg,
		groups: make(map[uint64]*groupBus),
		stop:   make(chan struct{}),
	}
	h.log = cfg.Logger.With(slog.String("component", "raftbridge_host"),
		slog.String("cluster", cfg.Cluster.String()), slog.String("local_incarnation", cfg.Incarnation.String()))
	h.drops = newDropLogger(h.log, cfg.DropLogInterval)
	h.live.init()
	h.co.init(h)
	if cfg.Registerer != nil {
		cs := h.stats.collectors()
		if err := register(cfg.Registerer, cs...); err != nil {
			return nil, err
		}
		h.collectors = cs
	}
	return h, nil
}

// NewBridge creates the bridge of one group on this host. cfg is a bridge
// Config without Bus (the host provides it); Cluster and Incarnation may
// be left zero and are the host's; Registerer, if nil, is the host's,
// and either way the bridge's metrics carry a "group" label. The bridge is
// started with its own Start and releases its group when closed.
func (h *Host) NewBridge(cfg Config) (*Bridge, error) {
	if cfg.Bus != nil {
		return nil, fmt.Errorf("%w: a host's bridge gets its bus from the host", ErrInvalidConfig)
	}
	if cfg.Cluster == uuid.Nil {
		cfg.Cluster = h.cfg.Cluster
	}
	if cfg.Incarnation == uuid.Nil {
		cfg.Incarnation = h.cfg.Incarnation
	}
	if cfg.Cluster != h.cfg.Cluster || cfg.Incarnation != h.cfg.Incarnation {
		return nil, fmt.Errorf("%w: a host's bridges share its cluster and incarnation", ErrInvalidConfig)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = h.cfg.Registerer
	}
	cfg.Registerer = grouplabel.Wrap(cfg.Registerer, cfg.Group)
	cfg.sparseMetrics = true
	gb, err := h.reserve(cfg.Group)
	if err != nil {
		return nil, err
	}
	cfg.Bus = gb
	b, err := New(cfg)
	if err != nil {
		gb.release()
		return nil, err
	}
	return b, nil
}

func (h *Host) reserve(group uint64) (*groupBus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrClosed
	case h.groups[group] != nil:
		return nil, fmt.Errorf("%w: group %d", ErrGroupExists, group)
	case len(h.groups) >= h.cfg.MaxGroups:
		return nil, fmt.Errorf("%w: the host already holds MaxGroups (%d) groups", ErrInvalidConfig, h.cfg.MaxGroups)
	}
	gb := &groupBus{h: h, group: group}
	h.groups[group] = gb
	return gb, nil
}

// Start starts the host's coalescing loop and registers it as the bus's
// receiver. Envelopes for groups whose bridge has not started yet are
// dropped (unknown_group), as a single-group bridge drops what arrives
// before it starts.
func (h *Host) Start() error {
	var err error
	h.startOnce.Do(func() {
		if h.cfg.CoalesceInterval > 0 {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.co.run(h.cfg.CoalesceInterval, h.stop)
			}()
		}
		if e := h.cfg.Bus.Start(hostReceiver{h}); e != nil {
			err = fmt.Errorf("raftbridge: start bus: %w", e)
		}
	})
	return err
}

// Close stops the coalescing loop (heartbeats still waiting are sent) and
// drops everything that arrives from now on. It does not close the groups'
// bridges or the bus. Close is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.stop)
		h.wg.Wait()
		h.co.flush()
		for _, c := range h.collectors {
			h.cfg.Registerer.Unregister(c)
		}
	})
	return nil
}

// Groups returns the number of groups with a bridge on the host.
func (h *Host) Groups() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.groups)
}

// Flush sends the heartbeats waiting for coalescing now.
func (h *Host) Flush() { h.co.flush() }

// Track sets the peer hosts whose liveness the host records: deliveries
// from other incarnations are not recorded, so that no sender can grow
// the table. Peers that stay keep their last-heard time.
func (h *Host) Track(peers []uuid.UUID) { h.live.track(peers) }

// LastHeard returns when anything last arrived from a tracked peer host
// (its subject proves the sender, as for every delivery); ok is false for
// a peer not tracked or never heard from.
func (h *Host) LastHeard(peer uuid.UUID) (time.Time, bool) { return h.live.lastHeard(peer) }

// Ping sends a host ping to every tracked peer: while all groups two hosts
// share are quiescent, pings are the only traffic between them, one frame
// per peer per call however many groups there are.
func (h *Host) Ping() {
	ping := wire.AppendHostPing(nil, h.cfg.Cluster)
	for _, p := range h.live.peers() {
		if err := h.cfg.Bus.Send(p, bus.KindMsg, ping); err != nil {
			h.stats.outDropped(bus.ReasonOf(err), 1)
		} else {
			h.stats.pings.Add(1)
		}
	}
}

// HostStats is a copy of a host's counters.
type HostStats struct {
	// Dropped counts inbound payloads the host dropped before any group
	// saw them, by reason: unknown_group, decode, version, the bus's own.
	Dropped map[bus.DropReason]uint64
	// OutDropped counts coalesced heartbeat frames and pings the bus
	// refused, by reason.
	OutDropped map[bus.DropReason]uint64
	// CoalescedEnvelopes counts heartbeat envelopes that waited for
	// coalescing; CoalescedFrames the payloads they left in.
	CoalescedEnvelopes, CoalescedFrames uint64
	// PingsSent and PingsReceived count host pings.
	PingsSent, PingsReceived uint64
}

// Stats returns a copy of the host's counters.
func (h *Host) Stats() HostStats { return h.stats.snapshot() }

// hostReceiver is the host's bus.Receiver.
type hostReceiver struct{ h *Host }

// Deliver implements bus.Receiver.
func (r hostReceiver) Deliver(d bus.Delivery) { r.h.deliver(d) }

// Dropped implements bus.Receiver.
func (r hostReceiver) Dropped(from uuid.UUID, reason bus.DropReason, n int) {
	r.h.drop(reason, n, from, nil)
}

func (h *Host) deliver(d bus.Delivery) {
	if d.Cluster != h.cfg.Cluster || d.To != h.cfg.Incarnation {
		h.drop(DropWrongDestination, 1, d.From, nil)
		return
	}
	h.live.heard(d.From)
	kind, ok := wire.PayloadKind(d.Data)
	if !ok {
		h.drop(payloadDropReason(d.Data), 1, d.From, nil)
		return
	}
	switch kind {
	case wire.EnvelopeBatch:
		h.deliverBatch(d)
	case wire.EnvelopeHostPing:
		if c, err := wire.DecodeHostPing(d.Data); err != nil || c != h.cfg.Cluster || d.Kind != bus.KindMsg {
			h.drop(DropDecode, 1, d.From, err)
			return
		}
		h.stats.pingsIn.Add(1)
	default:
		h.route(d)
	}
}

func (h *Host) deliverBatch(d bus.Delivery) {
	if d.Kind != bus.KindMsg {
		h.drop(DropDecode, 1, d.From, errors.New("a batch on a snapshot subject"))
		return
	}
	envs, err := wire.DecodeBatch(d.Data)
	if err != nil {
		h.drop(DropDecode, 1, d.From, err)
		return
	}
	for _, e := range envs {
		sub := d
		sub.Data = e
		h.route(sub)
	}
}

// route hands one group envelope to its group's bridge, which checks
// everything, the group included, again.
func (h *Host) route(d bus.Delivery) {
	g, err := wire.PeekGroup(d.Data)
	if err != nil {
		h.drop(DropDecode, 1, d.From, err)
		return
	}
	h.mu.RLock()
	gb := h.groups[g]
	var r bus.Receiver
	if gb != nil {
		r = gb.receiver()
	}
	h.mu.RUnlock()
	if r == nil {
		h.drop(DropUnknownGroup, 1, d.From, fmt.Errorf("group %d", g))
		return
	}
	r.Deliver(d)
}

// payloadDropReason tells an unsupported version from garbage.
func payloadDropReason(b []byte) bus.DropReason {
	if _, _, err := wire.DecodeHeader(b); errors.Is(err, wire.ErrVersion) {
		return DropVersion
	}
	return DropDecode
}

func (h *Host) drop(reason bus.DropReason, n int, from uuid.UUID, err error) {
	h.stats.inDropped(reason, n)
	h.drops.warn(reason, "raftbridge: host dropped inbound payload", func() []slog.Attr {
		attrs := []slog.Attr{slog.String("subject_from", from.String()), slog.Int("payloads", n)}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		return attrs
	})
}

// groupBus is one group's view of the host's bus: sends go to the shared
// bus (or wait for coalescing), deliveries come from the host's router.
type groupBus struct {
	h     *Host
	group uint64
	recv  atomic.Pointer[bus.Receiver]
}

func (g *groupBus) receiver() bus.Receiver {
	if p := g.recv.Load(); p != nil {
		return *p
	}
	return nil
}

func (g *groupBus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	return g.h.cfg.Bus.Send(to, kind, data)
}

func (g *groupBus) sendCoalesced(to uuid.UUID, data []byte) error {
	if g.h.cfg.CoalesceInterval < 0 {
		return g.Send(to, bus.KindMsg, data)
	}
	return g.h.co.add(to, data)
}

func (g *groupBus) Start(r bus.Receiver) error {
	if !g.recv.CompareAndSwap(nil, &r) {
		return errors.New("raftbridge: group bus started twice")
	}
	return nil
}

func (g *groupBus) State() bus.State { return g.h.cfg.Bus.State() }
func (g *groupBus) Stats() bus.Stats { return g.h.cfg.Bus.Stats() }

// Close releases the group; the shared bus stays open.
func (g *groupBus) Close() error {
	g.release()
	return nil
}

func (g *groupBus) release() {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	if g.h.groups[g.group] == g {
		delete(g.h.groups, g.group)
	}
}

// coalescer is implemented by a bus that lets plain heartbeats wait to
// share frames (a Host's group bus).
type coalescer interface {
	sendCoalesced(to uuid.UUID, data []byte) error
}

// releaser is implemented by a bus a bridge holds alone and gives back
// when it closes (a Host's group bus).
type releaser interface{ release() }
