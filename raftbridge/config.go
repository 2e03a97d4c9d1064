package raftbridge

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Defaults for the zero values of Config.
const (
	// DefaultMaxEnvelopeBytes keeps an envelope, plus the bus's frame
	// overhead, below NATS's default max_payload of 1 MiB.
	DefaultMaxEnvelopeBytes = 1<<20 - 4<<10
	// MinEnvelopeBytes is the smallest accepted MaxEnvelopeBytes: below it
	// a snapshot chunk would carry almost no data.
	MinEnvelopeBytes = 1 << 10

	DefaultDropLogInterval        = 10 * time.Second
	DefaultProcessTimeout         = time.Second
	DefaultMaxSnapshotBytes       = 1 << 30
	DefaultSnapshotWindow         = 16
	DefaultSnapshotTimeout        = 10 * time.Second
	DefaultSnapshotResendInterval = 500 * time.Millisecond
	DefaultSnapshotRetryBackoff   = time.Second
	DefaultSnapshotApplyTimeout   = time.Minute
)

// Config configures a Bridge. Zero values of the optional fields take the
// documented defaults; validate rejects everything else that cannot work.
type Config struct {
	// Cluster, ID and Incarnation say who this bridge is: the cluster it
	// belongs to, the Raft ID it holds and the incarnation (created with the
	// data directory, never reused) holding it. All three are required; ID
	// must not be 0 (raft.None).
	Cluster     uuid.UUID
	ID          uint64
	Incarnation uuid.UUID
	// Group is the Raft group this bridge carries, when one incarnation
	// holds members of many groups (Host); every envelope names it and the
	// bridge drops envelopes of other groups (group_mismatch). Default 0,
	// the only group of a single-group node, whose envelopes are of wire
	// version 1.
	Group uint64

	// Bus carries the envelopes. The bridge calls Start on it (from
	// Bridge.Start) but never Close: the caller owns the bus and closes it
	// after the bridge.
	Bus bus.Bus
	// Directory resolves Raft IDs to incarnations and knows the tombstones.
	Directory Directory
	// Raft receives validated messages and the transport's reports. If it
	// also implements SnapshotReceiver, complete snapshots go there.
	Raft Raft

	// Logger receives drop warnings (rate limited) and transfer events.
	// Default: discard.
	Logger *slog.Logger
	// Registerer receives the bridge's metrics. Default (nil): none are
	// registered; Stats still works.
	Registerer prometheus.Registerer

	// MaxEnvelopeBytes is the largest envelope the bridge builds: batches
	// for one destination are split below it and snapshots are chunked
	// below it. It must stay below the bus's payload limit. A single Raft
	// message larger than it still goes out alone (and the bus may refuse
	// it as too_large), so keep raft.Config.MaxSizePerMsg well below it.
	// Default DefaultMaxEnvelopeBytes; minimum MinEnvelopeBytes.
	MaxEnvelopeBytes int
	// DropLogInterval is the least time between two drop warnings for the
	// same reason; drops in between are only counted. Default 10 s.
	DropLogInterval time.Duration
	// ProcessTimeout bounds each call to Raft.Process (the deadline of its
	// context): every message has a budget of its own, between half of it
	// and all of it (calls within half a timeout share one context), so a
	// slow step costs at most that message, not the rest of its envelope.
	// Default 1 s.
	ProcessTimeout time.Duration

	// MaxSnapshotBytes bounds the snapshots the receiver takes. A snapshot
	// claiming more is refused at its first chunk. Without a
	// SnapshotStore it bounds the memory buffered for snapshots, over all
	// transfers in progress: a transfer whose data would take the buffers
	// beyond it fails, and buffers grow as chunks arrive, never from the
	// size a chunk claims. With a SnapshotStore it bounds each snapshot's
	// file (the store bounds how many there are) and no buffer is held.
	// Default 1 GiB.
	MaxSnapshotBytes int64
	// SnapshotStore, if set, streams snapshot data between the store and
	// the bus chunk by chunk, so that neither side holds a snapshot in
	// memory: the Snapshot.Data of every MsgSnap, outgoing and incoming, is
	// then a reference in the store (see SnapshotStore), and each transfer
	// holds O(chunk) memory on both sides. FileSnapshotStore keeps them in
	// a directory. Default (nil): Snapshot.Data is the data, sent from and
	// reassembled in memory.
	SnapshotStore SnapshotStore
	// SnapshotWindow is how many chunks may be unacknowledged at most.
	// Default 16 (16 MiB in flight with the default envelope size): a
	// 1 GiB transfer then reaches three quarters of raw NATS throughput
	// where 4 gave less than two thirds (BENCHMARKS.md); the cost is that a
	// heartbeat to the receiver can wait behind 16 MiB on the wire, about
	// 150 ms at 1 Gbit/s, well within an election timeout. A transfer
	// halves its window on every loss (down to 4) and grows it back with
	// in-order progress, so a lossy path does not drown in resends.
	SnapshotWindow int
	// SnapshotTimeout abandons a transfer that made no progress for this
	// long, on both sides; the sender then reports SnapshotFailure.
	// Default 10 s.
	SnapshotTimeout time.Duration
	// SnapshotResendInterval is how long the sender waits for an ack before
	// resending from the last acknowledged chunk. It must be shorter than
	// SnapshotTimeout. Default 500 ms or SnapshotTimeout/4, the smaller.
	SnapshotResendInterval time.Duration
	// SnapshotRetryBackoff is the wait before the next transfer to a peer
	// after a failed one; it doubles with every further failure up to
	// SnapshotTimeout and resets after a success, so a dead follower does
	// not get a snapshot in a tight loop. Default 1 s.
	SnapshotRetryBackoff time.Duration
	// SnapshotApplyTimeout bounds the receiving node's ReceiveSnapshot (or
	// Process) call for a complete snapshot. Default 1 min.
	SnapshotApplyTimeout time.Duration

	// sparseMetrics is set by Host.NewBridge: see meter.sparse.
	sparseMetrics bool
}

// ErrInvalidConfig is wrapped by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("raftbridge: invalid config")

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if err := wire.ValidateID(c.Cluster); err != nil {
		return bad("Cluster: %v", err)
	}
	if err := wire.ValidateID(c.Incarnation); err != nil {
		return bad("Incarnation: %v", err)
	}
	if c.ID == raft.None || raft.IsLocalMsgTarget(c.ID) {
		return bad("ID %x is reserved by raft", c.ID)
	}
	if c.Bus == nil || c.Directory == nil || c.Raft == nil {
		return bad("Bus, Directory and Raft are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.SnapshotTimeout < 0:
		return bad("SnapshotTimeout must not be negative")
	case c.SnapshotTimeout == 0:
		c.SnapshotTimeout = DefaultSnapshotTimeout
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DropLogInterval", &c.DropLogInterval, DefaultDropLogInterval},
		{"ProcessTimeout", &c.ProcessTimeout, DefaultProcessTimeout},
		{"SnapshotResendInterval", &c.SnapshotResendInterval, min(DefaultSnapshotResendInterval, c.SnapshotTimeout/4)},
		{"SnapshotRetryBackoff", &c.SnapshotRetryBackoff, DefaultSnapshotRetryBackoff},
		{"SnapshotApplyTimeout", &c.SnapshotApplyTimeout, DefaultSnapshotApplyTimeout},
	} {
		switch {
		case *d.v < 0:
			return bad("%s must not be negative", d.name)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case c.MaxEnvelopeBytes < 0:
		return bad("MaxEnvelopeBytes must not be negative")
	case c.MaxEnvelopeBytes == 0:
		c.MaxEnvelopeBytes = DefaultMaxEnvelopeBytes
	case c.MaxEnvelopeBytes < MinEnvelopeBytes:
		return bad("MaxEnvelopeBytes %d is below the minimum %d", c.MaxEnvelopeBytes, MinEnvelopeBytes)
	}
	switch {
	case c.MaxSnapshotBytes < 0:
		return bad("MaxSnapshotBytes must not be negative")
	case c.MaxSnapshotBytes == 0:
		c.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	switch {
	case c.SnapshotWindow < 0:
		return bad("SnapshotWindow must not be negative")
	case c.SnapshotWindow == 0:
		c.SnapshotWindow = DefaultSnapshotWindow
	}
	if c.SnapshotResendInterval >= c.SnapshotTimeout {
		return bad("SnapshotResendInterval %v must be shorter than SnapshotTimeout %v", c.SnapshotResendInterval, c.SnapshotTimeout)
	}
	return nil
}
