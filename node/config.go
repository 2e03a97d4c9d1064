package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/nodehook"
)

// Config configures a Node. Zero values take the documented defaults.
type Config struct {
	// Cluster, ID and Incarnation identify this node: the cluster it belongs
	// to, its Raft ID (never reused) and the incarnation created with its
	// data directory. All three are required.
	Cluster     uuid.UUID
	ID          uint64
	Incarnation uuid.UUID
	// Group is the Raft group this node is a member of, when a Host runs
	// many groups in one process; its envelopes, logs and metrics carry
	// it. Default 0, the only group of a single-group node.
	Group uint64
	// Host, when set, runs this node as one group of many: its traffic
	// goes through the host's raftbridge.Host (Bus must be nil), it ticks
	// with the host, and it quiesces when idle (see Host). Its
	// TickInterval and ElectionTicks are the host's, and Ticker must be
	// unset.
	Host *Host

	// Name is the operator-facing name of the node; informational.
	Name string
	// ClientURL is where this node serves its HTTP API; informational, it
	// travels in membership records so operators can find the node.
	ClientURL string

	// Peers bootstraps a new cluster when the storage is empty: every
	// initial member including this node. Leave empty to restart from
	// storage or to join an existing cluster (the node then waits to be
	// contacted by the leader after it was added).
	Peers []Member

	// JoinMembers are the cluster's current members, as the caller has
	// verified them (from the membership stream's records), for a node
	// that joins with empty storage and no Peers: the bridge admits only
	// members, so without them the leader's first messages would be
	// dropped as unknown. They answer directory lookups only until the
	// first replicated membership (snapshot or log) is applied, and are
	// never part of the replicated state. Ignored on restart and bootstrap.
	JoinMembers []Member

	// Storage holds the Raft log, hard state and snapshots. Required. The
	// node does not close it.
	Storage Storage
	// StateMachine is the replicated application state. Required.
	StateMachine StateMachine
	// Bus carries Raft traffic. Required. The node does not close it.
	Bus bus.Bus
	// newTransport, when set (internal/nodehook, for the benchmarks),
	// builds the transport instead of a raftbridge over Bus.
	newTransport nodehook.Factory

	// TickInterval is the Raft tick. Default 100ms.
	TickInterval time.Duration
	// Ticker, when set, is the source of Raft ticks instead of the wall
	// clock: it returns the channel the Ready loop takes ticks from and a
	// function that releases it when the loop ends. Tests use it to drive
	// Raft time by hand (one value sent, one Tick). Default: a time.Ticker
	// every TickInterval. TickInterval still paces the node's own retries
	// (ReadIndex re-sends, leadership transfer polling).
	Ticker func() (<-chan time.Time, func())
	// ElectionTicks and HeartbeatTicks are in ticks. Defaults 10 and 1.
	ElectionTicks  int
	HeartbeatTicks int
	// MaxSizePerMsg bounds the entries of one MsgApp. Default 256 KiB; it
	// must stay below the bus frame limit.
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds unacknowledged MsgApps per follower. Default 256.
	MaxInflightMsgs int
	// MaxProposalBytes bounds one proposal. Default 768 KiB, so that a
	// single entry always fits one NATS message under the default 1 MiB
	// max_payload.
	MaxProposalBytes int
	// SnapshotEntries: a snapshot is taken every this many applied entries.
	// Default 10000.
	SnapshotEntries uint64
	// CompactionOverhead: entries kept in the log behind a snapshot so that
	// slightly lagging followers catch up without a snapshot. Default 5000.
	CompactionOverhead uint64
	// StopTransferTimeout bounds the leadership transfer on Stop. Default 3s.
	StopTransferTimeout time.Duration

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the node's and the transport's metrics. Default:
	// none.
	Registerer prometheus.Registerer
}

func (c *Config) validate() error {
	var errs []error
	if c.Cluster == uuid.Nil {
		errs = append(errs, errors.New("cluster ID is required"))
	}
	if c.ID == 0 {
		errs = append(errs, errors.New("raft ID is required (0 is not a valid raft ID)"))
	}
	if c.Incarnation == uuid.Nil {
		errs = append(errs, errors.New("incarnation is required"))
	}
	if c.Storage == nil {
		errs = append(errs, errors.New("storage is required"))
	}
	if c.StateMachine == nil {
		errs = append(errs, errors.New("state machine is required"))
	}
	if c.Host != nil {
		if c.Bus != nil || c.Ticker != nil {
			errs = append(errs, errors.New("a node on a host takes its bus and ticks from the host: leave Bus and Ticker unset"))
		}
		c.TickInterval, c.ElectionTicks = c.Host.cfg.TickInterval, c.Host.cfg.ElectionTicks
	} else if c.Bus == nil && c.newTransport == nil {
		errs = append(errs, errors.New("a bus (or a transport) is required"))
	}
	seen := map[uint64]bool{}
	self := false
	for _, p := range c.Peers {
		if p.ID == 0 || p.Incarnation == uuid.Nil {
			errs = append(errs, fmt.Errorf("peer %q needs a raft ID and an incarnation", p.Name))
		}
		if seen[uint64(p.ID)] {
			errs = append(errs, fmt.Errorf("peer raft ID %s listed twice", p.ID))
		}
		seen[uint64(p.ID)] = true
		if uint64(p.ID) == c.ID {
			self = true
			if p.Incarnation != c.Incarnation {
				errs = append(errs, fmt.Errorf("peer entry for this node (%s) names incarnation %s, but this node is %s", p.ID, p.Incarnation, c.Incarnation))
			}
		}
	}
	if len(c.Peers) > 0 && !self {
		errs = append(errs, fmt.Errorf("peers do not include this node (%x)", c.ID))
	}
	setDefault(&c.TickInterval, 100*time.Millisecond)
	setDefault(&c.ElectionTicks, 10)
	setDefault(&c.HeartbeatTicks, 1)
	setDefault(&c.MaxSizePerMsg, 256<<10)
	setDefault(&c.MaxInflightMsgs, 256)
	setDefault(&c.MaxProposalBytes, 768<<10)
	setDefault(&c.SnapshotEntries, 10000)
	setDefault(&c.CompactionOverhead, 5000)
	setDefault(&c.StopTransferTimeout, 3*time.Second)
	if c.ElectionTicks <= c.HeartbeatTicks {
		errs = append(errs, fmt.Errorf("election ticks (%d) must exceed heartbeat ticks (%d)", c.ElectionTicks, c.HeartbeatTicks))
	}
	if c.TickInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("tick interval %v is below 1ms", c.TickInterval))
	}
	if c.Ticker == nil {
		c.Ticker = wallTicker(c.TickInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return fmt.Errorf("node: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// wallTicker is the default tick source: the wall clock every interval.
func wallTicker(interval time.Duration) func() (<-chan time.Time, func()) {
	return func() (<-chan time.Time, func()) {
		t := time.NewTicker(interval)
		return t.C, t.Stop
	}
}
