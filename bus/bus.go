package bus

import (
	"errors"

	"github.com/google/uuid"
)

// Kind names what a payload carries. It is the last token of the subject.
type Kind string

// Kinds used by raftbus. New kinds may be added; a receiver hands every kind
// to its Receiver and lets the layer above decide.
const (
	// KindMsg carries envelopes of ordinary Raft messages.
	KindMsg Kind = "msg"
	// KindSnap carries snapshot transfer chunks and their acknowledgements.
	KindSnap Kind = "snap"
)

// Delivery is one payload received by an incarnation, exactly as it was
// passed to Send on the sending side. The identities are those of the
// subject it arrived on: they say where the bus delivered it, not who wrote
// the bytes, so the layer above must compare them with what the payload
// claims.
type Delivery struct {
	Cluster uuid.UUID // cluster token of the subject
	To      uuid.UUID // destination incarnation token of the subject
	From    uuid.UUID // source incarnation token of the subject
	Kind    Kind
	// Data is owned by the receiver from the moment Deliver is called.
	Data []byte
}

// DropReason says why the bus discarded traffic. Its values are used as
// metric label values, so the set is small and fixed.
type DropReason string

// Reasons for which a bus drops traffic.
const (
	// DropQueueFull: the destination's send queue was full (count or bytes).
	DropQueueFull DropReason = "queue_full"
	// DropTooLarge: a single payload exceeds the bus's batch limit.
	DropTooLarge DropReason = "too_large"
	// DropNotConnected: the bus has no connection to carry the payload.
	DropNotConnected DropReason = "not_connected"
	// DropPublishFailed: the underlying publish returned an error.
	DropPublishFailed DropReason = "publish_failed"
	// DropClosed: the bus was closed.
	DropClosed DropReason = "closed"
	// DropBadFrame: an inbound frame could not be split into payloads.
	DropBadFrame DropReason = "decode"
	// DropBadSubject: an inbound subject was not of the raftbus form or not
	// addressed to this incarnation.
	DropBadSubject DropReason = "bad_subject"
	// DropSlowConsumer: the subscription fell behind and the NATS client
	// discarded messages.
	DropSlowConsumer DropReason = "slow_consumer"
	// DropPartitioned: the in-memory bus discarded a payload because of an
	// injected fault (partition or drop rate).
	DropPartitioned DropReason = "fault_injected"
)

// Receiver is what a Bus delivers to. Both methods are called from the bus's
// delivery goroutine, one call at a time; they must not block for long,
// because while they run no other delivery for this incarnation proceeds.
type Receiver interface {
	// Deliver hands over one payload addressed to this incarnation.
	Deliver(d Delivery)
	// Dropped reports inbound traffic the bus discarded before it could be
	// delivered: n payloads (or frames, when the count is unknown) for the
	// given reason. from is uuid.Nil when the sender is not known.
	Dropped(from uuid.UUID, reason DropReason, n int)
}

// State is the bus's view of its connection.
type State int

// Connection states.
const (
	StateConnected State = iota
	StateDisconnected
	StateClosed
)

// String returns the state's name: connected, disconnected or closed.
func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Bus moves opaque payloads between incarnations of one cluster.
//
// Implementations must be safe for concurrent use. Send never blocks: it
// either queues the payload for its destination or returns an error that
// wraps one of the Err values below, and the payload is then dropped.
type Bus interface {
	// Send queues data for the incarnation to. The bus takes ownership of
	// data; the caller must not modify it afterwards. A nil error means the
	// payload was queued, not that it arrived: buses are lossy.
	Send(to uuid.UUID, kind Kind, data []byte) error
	// Start begins delivering inbound payloads to r. It must be called at
	// most once; payloads that arrive before Start are not delivered.
	Start(r Receiver) error
	// State reports the connection state.
	State() State
	// Stats returns a point-in-time copy of the bus's counters.
	Stats() Stats
	// Close stops delivery and all goroutines of the bus and waits for them.
	// Queued payloads are discarded. Close is idempotent.
	Close() error
}

// Stats is a snapshot of a bus's counters. Counters only grow.
type Stats struct {
	SentPayloads     uint64 // payloads handed to the network
	SentFrames       uint64 // network messages (a frame holds one or more payloads)
	SentBytes        uint64 // frame bytes handed to the network
	ReceivedPayloads uint64 // payloads delivered to the Receiver
	ReceivedFrames   uint64 // inbound network messages, including dropped ones
	ReceivedBytes    uint64 // bytes of those messages
	// Dropped counts payloads discarded on either side, by reason (frames,
	// for reasons where the payload count is unknown: DropBadFrame,
	// DropBadSubject, DropSlowConsumer). Reasons never seen are absent.
	Dropped map[DropReason]uint64
	// Queues holds the current depth of each destination's send queue,
	// including the frame its sender is publishing. Destinations whose
	// sender has retired after being idle are absent.
	Queues map[uuid.UUID]QueueStats
	// Reconnects counts reconnections of the underlying connection.
	Reconnects uint64
}

// QueueStats is the depth of one destination's send queue.
type QueueStats struct {
	Payloads int
	Bytes    int
}

// Errors returned (wrapped) by Send and by constructors.
var (
	// ErrQueueFull is returned by Send when the destination's queue is full.
	ErrQueueFull = errors.New("bus: send queue full")
	// ErrTooLarge is returned by Send when a payload exceeds the batch limit.
	ErrTooLarge = errors.New("bus: payload too large")
	// ErrNotConnected is returned by Send while the bus has no connection.
	ErrNotConnected = errors.New("bus: not connected")
	// ErrClosed is returned by Send and Start after Close.
	ErrClosed = errors.New("bus: closed")
	// ErrAlreadyStarted is returned by a second call to Start.
	ErrAlreadyStarted = errors.New("bus: already started")
	// ErrInvalidToken is returned for an identity or prefix that cannot be
	// used as a subject token.
	ErrInvalidToken = errors.New("bus: invalid subject token")
)

// ReasonOf maps an error returned by Send to the drop reason it stands for.
func ReasonOf(err error) DropReason {
	switch {
	case errors.Is(err, ErrQueueFull):
		return DropQueueFull
	case errors.Is(err, ErrTooLarge):
		return DropTooLarge
	case errors.Is(err, ErrNotConnected):
		return DropNotConnected
	case errors.Is(err, ErrClosed):
		return DropClosed
	}
	return DropPublishFailed
}
