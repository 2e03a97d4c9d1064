package natsbus

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults of ConnTuning fields left zero, chosen so that a node whose
// server stops answering (SIGSTOP, a hung host, a black-holed route) moves
// to another server of the cluster within a few seconds rather than after
// nats.go's defaults (a 2-minute ping interval and a 1-minute write
// deadline), which would cut the node off from Raft for that long.
const (
	// DefaultWriteDeadline bounds one write of nats.go's buffer to the
	// socket (nats.go's default: 1 minute).
	DefaultWriteDeadline = 2 * time.Second
	// DefaultPingInterval is how often the client pings the server
	// (nats.go's default: 2 minutes).
	DefaultPingInterval = time.Second
	// DefaultMaxPingsOut is how many pings may go unanswered before the
	// connection is declared stale (nats.go's default: 2).
	DefaultMaxPingsOut = 2
	// DefaultDialTimeout bounds a TCP connect (nats.go's default: 2 s).
	DefaultDialTimeout = 2 * time.Second
)

// ConnTuning holds the nats.go connection options that decide how fast a
// stalled server is detected. The bus does not own its connection: pass
// Options to nats.Connect when creating the connection given to New.
//
//	nc, err := nats.Connect(urls, append(natsbus.ConnTuning{}.Options(), nats.MaxReconnects(-1))...)
//
// A server that stops reading is detected in one of two ways, whichever
// comes first:
//
//   - Pings: every PingInterval the client sends a PING; when more than
//     MaxPingsOut are unanswered it reconnects, to the next server of its
//     list. That takes about PingInterval x (MaxPingsOut + 1), 3 s with the
//     defaults. The ping timer needs the connection's lock, which nats.go
//     holds while it writes to the socket, so under load the write deadline
//     is what bounds the detection.
//   - Write deadline: a socket write that takes longer than WriteDeadline
//     fails; with nats.go's ReconnectOnFlusherError (set by Options) the
//     client then reconnects at once. Frames buffered in nats.go at that
//     moment are lost, which Raft repairs by retransmitting.
//
// Shorter values detect a stall sooner but reconnect more readily on a
// slow network; a ping interval well below Raft's election timeout keeps a
// stalled node from being cut off long enough to matter. The subscription
// side's bounds are Config.PendingMsgsLimit and PendingBytesLimit.
type ConnTuning struct {
	// WriteDeadline is nats.FlusherTimeout. Default DefaultWriteDeadline
	// (2 s).
	WriteDeadline time.Duration
	// PingInterval is nats.PingInterval. Default DefaultPingInterval (1 s).
	PingInterval time.Duration
	// MaxPingsOut is nats.MaxPingsOutstanding. Default DefaultMaxPingsOut
	// (2).
	MaxPingsOut int
	// DialTimeout bounds each TCP connect by the dialer Options installs.
	// Default DefaultDialTimeout (2 s).
	DialTimeout time.Duration
	// KeepOnWriteError leaves nats.go's ReconnectOnFlusherError off, so
	// that a failed write is only reported and the connection is replaced
	// only once the pings time out. Default false: reconnect at once.
	KeepOnWriteError bool
}

// withDefaults returns t with zero fields set to their defaults.
func (t ConnTuning) withDefaults() ConnTuning {
	if t.WriteDeadline <= 0 {
		t.WriteDeadline = DefaultWriteDeadline
	}
	if t.PingInterval <= 0 {
		t.PingInterval = DefaultPingInterval
	}
	if t.MaxPingsOut <= 0 {
		t.MaxPingsOut = DefaultMaxPingsOut
	}
	if t.DialTimeout <= 0 {
		t.DialTimeout = DefaultDialTimeout
	}
	return t
}

// Options returns the nats.go options for t, zero fields defaulted.
// Options given after them to nats.Connect override them. They include a
// custom dialer (a net.Dialer with DialTimeout; nats.go's MPTCP option
// does not apply to it) that tracks the socket writes in progress, which
// Config.InlinePublish needs; call Options once per connection.
func (t ConnTuning) Options() []nats.Option {
	t = t.withDefaults()
	opts := []nats.Option{
		nats.SetCustomDialer(&trackingDialer{d: net.Dialer{Timeout: t.DialTimeout}}),
		nats.FlusherTimeout(t.WriteDeadline),
		nats.PingInterval(t.PingInterval),
		nats.MaxPingsOutstanding(t.MaxPingsOut),
	}
	if !t.KeepOnWriteError {
		opts = append(opts, nats.ReconnectOnFlusherError())
	}
	return opts
}

// trackingDialer dials TCP connections whose writes it follows. nats.go
// writes to the socket while holding its connection's lock, so a write in
// progress, or one about to start for frames still in nats.go's buffer, is
// what an inline publish could have to wait for (inline.go).
type trackingDialer struct {
	d       net.Dialer
	writing atomic.Int32  // writes in progress on this dialer's connections
	queued  atomic.Uint64 // frames nats.go's Publish has buffered, counted by the bus
	written atomic.Uint64 // the value of queued when the last successful write began
}

// Dial implements nats.CustomDialer.
func (d *trackingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, d: d}, nil
}

// buffered is called after each successful Publish of a frame, which is
// then in nats.go's buffer. Counting after the Publish errs on the safe
// side: a write that began before the count and carried the frame leaves
// written behind queued, so idle is false until the next write.
func (d *trackingDialer) buffered() { d.queued.Add(1) }

// idle reports whether no write is in progress and every frame published
// so far was in a write that has completed: nats.go's buffer holds none of
// the bus's frames, so the flusher has nothing of them to write.
func (d *trackingDialer) idle() bool {
	return d.writing.Load() == 0 && d.written.Load() == d.queued.Load()
}

// trackedConn reports its writes to its dialer. nats.go serialises writes
// under its connection's lock.
type trackedConn struct {
	net.Conn
	d *trackingDialer
}

func (c *trackedConn) Write(p []byte) (int, error) {
	c.d.writing.Add(1)
	q := c.d.queued.Load()
	n, err := c.Conn.Write(p)
	if err == nil {
		c.d.written.Store(q)
	}
	c.d.writing.Add(-1)
	return n, err
}
