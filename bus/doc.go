// Package bus is the NATS-free core of raftbus: the [Bus] interface that
// moves opaque payloads between node incarnations of one cluster, the
// [Receiver] it delivers to, its [Stats], errors and drop reasons, and the
// subject scheme every implementation follows. Implementations live in bus/natsbus (core NATS) and
// bus/membus (in memory, with fault injection); bus/bustest is the
// conformance suite both pass.
//
// # Addressing: incarnations, never addresses
//
// Every node incarnation (a UUID created with its data directory and never
// reused) has its own subjects:
//
//	<prefix>.<clusterID>.<dstIncarnation>.<srcIncarnation>.<kind>
//
// An incarnation subscribes only to <prefix>.<clusterID>.<self>.> and
// publishes with its own UUID as the source token. No host, port or Raft node ID appears anywhere, so a process
// that reuses a removed node's host:port, or its Raft ID, has a different
// incarnation and can never receive the removed node's traffic; the cluster
// token keeps clusters sharing one NATS deployment apart; and the source
// token lets per-incarnation NATS permissions (publish only on
// <prefix>.<cluster>.*.<self>.>) authenticate the sender. The identities in
// a [Delivery] are those of the subject it arrived on; the layer above
// still compares them with what the payload claims.
//
// # Tokens
//
// Cluster and incarnation tokens are UUIDs in canonical 36-character
// lowercase hyphenated form, never the nil UUID; any other spelling is
// rejected ([ErrInvalidToken]), so one identity has exactly one subject. A
// prefix ([DefaultPrefix] unless configured) is one or more dot-separated
// tokens of letters, digits, '-' and '_', not starting with '$' or _INBOX;
// a kind is a token of lowercase letters, digits, '-' and '_'. Inbound
// subjects are parsed again and must name the receiving cluster and
// incarnation, else they are dropped as [DropBadSubject]. The codec of
// subjects and frames is internal to raftbus (internal/wire): the layer
// above sees only payloads and a [Delivery]'s identities.
//
// # Frames
//
// A network message carries one frame: one or more payloads queued for the
// same destination and kind, coalesced by the sender:
//
//	frame   = magic 0xB5, version 1, count (uvarint > 0), payload{count}
//	payload = length (uvarint), bytes{length}
//
// The receiver validates the whole frame before handing out any payload;
// a malformed frame is dropped whole as [DropBadFrame] and never stops later
// deliveries. A payload that does not fit a frame of the bus's limit alone
// (each bus reports its MaxPayload) is refused with [ErrTooLarge].
//
// # Queueing and drops
//
// Buses are lossy by design, like the networks etcd Raft is built for:
//
//  1. Send never blocks. Each destination has a queue bounded by payload
//     count and bytes, and one sender goroutine that coalesces queued
//     payloads into frames. A full queue refuses with [ErrQueueFull]; a bus
//     without a connection refuses with [ErrNotConnected]; a closed bus with
//     [ErrClosed]. The caller decides what a refusal means (raftbridge
//     reports the peer unreachable).
//  2. Payloads to one destination of one kind arrive in the order they
//     were sent, unless lost; nothing is retransmitted, Raft does that.
//  3. Every drop, on either side, is counted in [Stats].Dropped by
//     [DropReason], and inbound drops are also reported to
//     [Receiver.Dropped]. The reasons are a small fixed set, usable as
//     metric labels.
//  4. Inbound buffering is bounded; overflow is [DropSlowConsumer].
//
// # Ownership of byte slices
//
// Send takes ownership of data: the caller must not modify it afterwards,
// and the bus only reads it. A [Delivery]'s Data is owned by the receiver
// from the moment Deliver is called; it may alias the received frame, but
// no other delivery shares its bytes and the bus never touches it again.
//
// # Goroutines
//
// Each bus delivers from one goroutine, so Receiver methods are never
// called concurrently and must return quickly. Close stops every goroutine
// of the bus and waits for them; it is idempotent.
package bus
