package natsbus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxQueuePayloads  = 4096
	DefaultMaxQueueBytes     = 64 << 20
	DefaultPendingMsgsLimit  = 65536
	DefaultPendingBytesLimit = 256 << 20
	DefaultIdleSenderTimeout = time.Minute

	// defaultFrameLimit caps the default MaxFrameBytes: NATS advises small
	// messages, and a 1 MiB frame already amortises the per-message cost.
	defaultFrameLimit = 1 << 20
	// FrameHeadroom is kept free below the server's max_payload by the
	// default MaxFrameBytes, for message headers that an operator or a later
	// version may add; NATS counts headers against max_payload.
	FrameHeadroom = 1 << 10
	// minFrameBytes keeps MaxFrameBytes large enough to be useful.
	minFrameBytes = 256
)

// ErrNoConn is returned by New when Config.Conn is nil.
var ErrNoConn = errors.New("natsbus: Config.Conn is required")

// Config configures a NATS bus.
type Config struct {
	// Conn is the NATS connection to use. Required. The bus does not own
	// it: Close leaves it open, and its reconnect options decide how the bus
	// survives server restarts (use MaxReconnects(-1) for a long-lived node).
	Conn *nats.Conn
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
	// MaxFrameBytes bounds one NATS message, and so a single payload.
	// Default min(1 MiB, Conn.MaxPayload()) - FrameHeadroom; it may not
	// exceed Conn.MaxPayload().
	MaxFrameBytes int
	// PendingMsgsLimit and PendingBytesLimit are the subscription's pending
	// limits; messages beyond them are dropped by the NATS client and
	// reported as bus.DropSlowConsumer. Defaults 65536 messages and
	// 256 MiB. The message limit is also capped by the connection's
	// SubChanLen (nats.SyncQueueLen, default 65536).
	PendingMsgsLimit  int
	PendingBytesLimit int
	// InlinePublish lets Send publish a payload from the caller's
	// goroutine when nothing is queued or being published for its
	// destination, saving the hand-off to the sender goroutine; bursts are
	// still queued and coalesced, and order per destination is kept.
	// It needs a connection made with ConnTuning.Options (whose dialer
	// tells the bus whether a socket write is in progress or pending) and
	// is ignored on any other. Default false: Send may then wait on
	// nats.go's connection lock, briefly, and in one rare case (a write of
	// nats.go's own protocol traffic that finds the socket full) until the
	// write deadline; see inline.go. No gain was measured on the
	// benchmark machine (bench/results/levers.md).
	InlinePublish bool
	// IdleSenderTimeout is how long a destination's sender goroutine waits
	// for work before it exits. Default 1 minute.
	IdleSenderTimeout time.Duration
	// Logger receives connection state changes and rate-limited drop
	// warnings. Default: discard.
	Logger *slog.Logger
	// Registerer, if set, gets the bus's raftbus_bus_* metrics. Register
	// one bus per Registerer (wrap it with labels to register several).
	Registerer prometheus.Registerer
}

func (c *Config) validate() error {
	if c.Conn == nil {
		return ErrNoConn
	}
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if err := wire.ValidatePrefix(c.Prefix); err != nil {
		return fmt.Errorf("natsbus: config: %w", err)
	}
	if err := wire.ValidateID(c.Cluster); err != nil {
		return fmt.Errorf("natsbus: config: cluster: %w", err)
	}
	if err := wire.ValidateID(c.Self); err != nil {
		return fmt.Errorf("natsbus: config: self: %w", err)
	}
	// MaxPayload is 0 until the connection has talked to a server (possible
	// with RetryOnFailedConnect); then only the static limits apply.
	maxPayload := int(c.Conn.MaxPayload())
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = defaultFrameLimit
		if maxPayload > 0 {
			c.MaxFrameBytes = min(c.MaxFrameBytes, maxPayload)
		}
		c.MaxFrameBytes -= FrameHeadroom
	}
	setDefault(&c.MaxQueuePayloads, DefaultMaxQueuePayloads)
	setDefault(&c.MaxQueueBytes, DefaultMaxQueueBytes)
	setDefault(&c.PendingMsgsLimit, DefaultPendingMsgsLimit)
	setDefault(&c.PendingBytesLimit, DefaultPendingBytesLimit)
	if c.IdleSenderTimeout == 0 {
		c.IdleSenderTimeout = DefaultIdleSenderTimeout
	}
	switch {
	case c.MaxQueuePayloads < 0 || c.MaxQueueBytes < 0:
		return fmt.Errorf("natsbus: config: queue limits must be positive")
	case c.PendingMsgsLimit < 0 || c.PendingBytesLimit < 0:
		// -1 would mean "unlimited" to nats.go; an unbounded buffer is
		// exactly what a lossy transport must not have.
		return fmt.Errorf("natsbus: config: pending limits must be positive")
	case c.MaxFrameBytes < minFrameBytes:
		return fmt.Errorf("natsbus: config: MaxFrameBytes %d is below %d", c.MaxFrameBytes, minFrameBytes)
	case maxPayload > 0 && c.MaxFrameBytes > maxPayload:
		return fmt.Errorf("natsbus: config: MaxFrameBytes %d exceeds the server's max_payload %d", c.MaxFrameBytes, maxPayload)
	case c.MaxQueueBytes < c.MaxFrameBytes:
		return fmt.Errorf("natsbus: config: MaxQueueBytes %d is below MaxFrameBytes %d", c.MaxQueueBytes, c.MaxFrameBytes)
	case c.IdleSenderTimeout < 0:
		return fmt.Errorf("natsbus: config: negative IdleSenderTimeout")
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
