package natsbus

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Inline publishing (Config.InlinePublish).
//
// Send publishes a payload from the caller's goroutine, framed alone,
// instead of handing it to the destination's sender goroutine, when all of
// these hold:
//
//   - the previous Send to that destination was at least burstGap ago: a
//     burst (a tight loop of Sends) is queued and coalesced into frames,
//     while Raft's sparse Sends (one envelope per destination per Ready)
//     go out at once;
//   - nothing is queued or being published for that destination, so the
//     payload cannot overtake an earlier one (order per destination is
//     kept: the destination's lock is held from the check to the end of
//     the publish, and the queued count covers payloads until the sender's
//     Publish has returned);
//   - no other publish of this bus is in progress (a TryLock of pubMu): a
//     sender that is inside Publish may be stuck on a full socket;
//   - the connection is idle: no socket write in progress, and every
//     frame published before (inline or by a sender) was in a write that
//     has completed. nats.go holds the connection's lock while it writes,
//     so a write stuck on a full socket would hold Publish too, and the
//     flusher starts a write soon after each publish. The connection must
//     have been made with ConnTuning.Options, whose dialer follows the
//     writes; on any other connection InlinePublish is ignored;
//   - no publish in the last inlineBackoff took slowPublish or longer;
//   - the payload is at most maxInlineBytes (large payloads gain nothing
//     from skipping a hand-off, and the frame buffer stays small).
//
// Otherwise the payload is queued as without the option, so bursts are
// still coalesced and bounded. The frame of an inline publish is built in
// one buffer reused under pubMu; nats.go copies it into its write buffer.
//
// What an inline publish can wait for, from nats.go v1.55's source: Publish
// takes the connection's lock and appends the frame to its write buffer,
// then kicks the flusher goroutine; it writes to the socket itself only
// when the buffer holds 32 KiB (nats.WriteBufSize) or more. While
// reconnecting it appends to the reconnect buffer instead, without any
// socket write, and fails with ErrReconnectBufExceeded when that is full
// (Send refuses before that anyway: the bus is not connected). So an
// inline publish blocks only when a socket write blocks, its own or the
// flusher's (which holds the lock while it writes), and a socket write
// blocks only when the socket buffer is full, i.e. the server stopped
// reading. The conditions above keep inline publishing away from a write
// in progress or pending and, after the first slow publish, from the
// connection altogether for inlineBackoff. What remains is a write of
// nats.go's own protocol traffic (a PONG, a SUB after a reconnect) that
// starts between the check and the publish and finds the socket buffer
// full. Then that Send waits until the write completes or fails after the
// write deadline (ConnTuning.WriteDeadline, 2 s by default; nats.go's
// default is 1 minute), and every later Send queues. Without
// InlinePublish, Send never waits on nats.go at all.
const (
	burstGap       = 5 * time.Microsecond
	slowPublish    = 5 * time.Millisecond
	inlineBackoff  = time.Second
	maxInlineBytes = 16 << 10
	// maxInlineDests bounds the per-destination state; destinations
	// beyond it are always queued.
	maxInlineDests = 1024
)

// dest is the inline-publishing state of one destination.
type dest struct {
	mu         sync.Mutex
	queued     int   // payloads handed to the queues and not yet published
	lastSendNs int64 // when Send was last called for this destination
	subjects   [2]string
}

// destFor returns the state of to, creating it if there is room.
func (b *Bus) destFor(to uuid.UUID) *dest {
	b.destMu.RLock()
	d := b.dests[to]
	b.destMu.RUnlock()
	if d != nil {
		return d
	}
	b.destMu.Lock()
	defer b.destMu.Unlock()
	if d = b.dests[to]; d == nil && len(b.dests) < maxInlineDests {
		d = &dest{}
		d.subjects[0] = wire.Subject(b.cfg.Prefix, b.cfg.Cluster, to, b.cfg.Self, bus.KindMsg)
		d.subjects[1] = wire.Subject(b.cfg.Prefix, b.cfg.Cluster, to, b.cfg.Self, bus.KindSnap)
		b.dests[to] = d
	}
	return d
}

// sendInline is Send's path with InlinePublish; it returns what
// Queues.Enqueue returns.
func (b *Bus) sendInline(to uuid.UUID, kind bus.Kind, data []byte) error {
	if wire.ValidateID(to) != nil || wire.ValidateKind(kind) != nil {
		return b.queues.Enqueue(to, kind, data) // refuses it
	}
	d := b.destFor(to)
	if d == nil {
		return b.queues.Enqueue(to, kind, data) // never tracked, never inline
	}
	now := time.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	sparse := now-d.lastSendNs >= int64(burstGap)
	d.lastSendNs = now
	if sparse && len(data) <= maxInlineBytes && len(data) <= b.maxPayload && d.queued == 0 &&
		now >= b.inlineOffNs.Load() && b.writes.idle() && b.pubMu.TryLock() {
		subj := d.subjects[0]
		if kind == bus.KindSnap {
			subj = d.subjects[1]
		}
		b.inlineFrame = wire.AppendFrame(b.inlineFrame[:0], [][]byte{data})
		b.publishFrame(to, kind, subj, b.inlineFrame, 1)
		b.pubMu.Unlock()
		b.inlined.Add(1)
		return nil
	}
	err := b.queues.Enqueue(to, kind, data)
	if err == nil {
		d.queued++
	}
	return err
}

// existingDest returns the state of to if it has one.
func (b *Bus) existingDest(to uuid.UUID) *dest {
	b.destMu.RLock()
	defer b.destMu.RUnlock()
	return b.dests[to]
}

// published records that the sender has published n payloads for to.
func (b *Bus) published(to uuid.UUID, n int) {
	if d := b.existingDest(to); d != nil {
		d.mu.Lock()
		d.queued -= n
		d.mu.Unlock()
	}
}
