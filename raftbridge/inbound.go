package raftbridge

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// receiver is the bridge's bus.Receiver. It is a separate type so that
// Deliver and Dropped are not part of Bridge's API.
type receiver struct{ b *Bridge }

// Deliver implements bus.Receiver.
func (r receiver) Deliver(d bus.Delivery) { r.b.deliver(d) }

// Dropped implements bus.Receiver: traffic the bus discarded is counted
// with the bus's reason (a bad frame counts as "decode").
func (r receiver) Dropped(from uuid.UUID, reason bus.DropReason, n int) {
	b := r.b
	b.meter.droppedEnvelopes(reason, n)
	b.drops.warn(reason, "raftbridge: bus dropped inbound traffic", func() []slog.Attr {
		return []slog.Attr{
			slog.String("peer_incarnation", from.String()),
			slog.Int("payloads", n),
		}
	})
}

// deliver validates one payload and hands what survives to Raft or to the
// snapshot machinery. It runs on the bus's delivery goroutine. Every
// failure is a counted, rate-limited-logged drop, and nothing is ever sent
// back to the sender of a dropped payload.
//
// The fixed header is decoded and the sender's identity checked before the
// body is decoded: a stranger's body costs nothing but the header parse.
func (b *Bridge) deliver(d bus.Delivery) {
	b.inflight.RLock()
	defer b.inflight.RUnlock()
	if b.closed.Load() {
		b.dropInbound(d, nil, DropBridgeClosed, 0, nil)
		return
	}
	h, body, err := wire.DecodeHeader(d.Data)
	if err != nil {
		reason := DropDecode
		if errors.Is(err, wire.ErrVersion) {
			reason = DropVersion
		}
		b.dropInbound(d, nil, reason, 0, err)
		return
	}
	switch {
	case d.Kind != bus.KindMsg && d.Kind != bus.KindSnap:
		b.dropInbound(d, &h, DropUnknownKind, 0, nil)
		return
	case (d.Kind == bus.KindMsg) != (h.Kind == wire.EnvelopeMessages):
		b.dropInbound(d, &h, DropDecode, 0, errors.New("the envelope kind does not match the subject's kind"))
		return
	}
	if !b.admit(d, &h, claimedCount(&h, body)) {
		return
	}
	switch h.Kind {
	case wire.EnvelopeMessages:
		msgs, err := wire.DecodeMessages(body)
		if err != nil {
			b.dropInbound(d, &h, DropDecode, 0, err)
			return
		}
		b.deliverMessages(d, &h, msgs)
	case wire.EnvelopeSnapChunk:
		c, err := decodeSnapChunk(h, body)
		if err != nil {
			b.dropInbound(d, &h, DropDecode, 0, err)
			return
		}
		b.meter.received(h.From.ID, 0, len(d.Data), h.DirectoryVersion)
		b.snapIn.deliver(c)
	case wire.EnvelopeSnapAck:
		a, err := decodeSnapAck(h, body)
		if err != nil {
			b.dropInbound(d, &h, DropDecode, 0, err)
			return
		}
		b.meter.received(h.From.ID, 0, len(d.Data), h.DirectoryVersion)
		b.snapOut.ack(a)
	}
}

// claimedCount is what a drop on the header counts: for a message envelope
// the message count its body announces, if that count is plausible (1 to
// MaxMessagesPerEnvelope, at most one message per remaining byte), else 0
// (the envelope is counted as one envelope).
// Reading one varint costs nothing and allocates nothing.
func claimedCount(h *wire.Header, body []byte) int {
	if h.Kind != wire.EnvelopeMessages {
		return 0
	}
	n, k := wire.ReadUvarint(body)
	if k <= 0 || n == 0 || n > wire.MaxMessagesPerEnvelope || n > uint64(len(body)-k) {
		return 0
	}
	return int(n)
}

// admit runs the identity checks, in the documented order, on a decoded
// envelope header and the subject it arrived on. n is what a drop counts
// (0: one envelope).
// Only a current member of the directory, under its current incarnation,
// is admitted.
func (b *Bridge) admit(d bus.Delivery, h *wire.Header, n int) bool {
	dir := b.cfg.Directory
	var reason bus.DropReason
	switch {
	case h.Cluster != b.cfg.Cluster || d.Cluster != b.cfg.Cluster:
		reason = DropClusterMismatch
	case h.Group != b.cfg.Group:
		reason = DropGroupMismatch
	case h.To != b.self || d.To != b.self.Incarnation:
		reason = DropWrongDestination
	case d.From != h.From.Incarnation || h.From.ID == raft.None || raft.IsLocalMsgTarget(h.From.ID):
		reason = DropSourceMismatch
	case dir.RemovedID(h.From.ID) || dir.RemovedIncarnation(h.From.Incarnation):
		reason = DropTombstoned
	case h.From.ID == b.self.ID:
		// Another incarnation claims this node's Raft ID (or this node's
		// own traffic looped back): either way not a peer.
		reason = DropStaleIncarnation
	default:
		inc, ok := dir.Incarnation(h.From.ID)
		switch {
		case ok && inc == h.From.Incarnation:
			return true
		case ok, b.memberOf(h.From.Incarnation, h.From.ID):
			// The ID belongs to another incarnation, or the incarnation
			// belongs to a member under another ID.
			reason = DropStaleIncarnation
		default:
			reason = DropUnknownSender
		}
	}
	b.dropInbound(d, h, reason, n, nil)
	return false
}

// memberOf reports whether inc belongs to a member other than id, when
// the directory can tell (IncarnationLookup).
func (b *Bridge) memberOf(inc uuid.UUID, id uint64) bool {
	l, ok := b.cfg.Directory.(IncarnationLookup)
	if !ok {
		return false
	}
	other, found := l.MemberOf(inc)
	return found && other != id
}

// deliverMessages checks every message of an admitted envelope against its
// header and steps the ones that agree. A message that disagrees is
// dropped alone ("message_mismatch"): the envelope's header already proved
// who sent it, and dropping its neighbours would turn one message raft did
// not expect into a stall (issue 8: a forwarded MsgReadIndex took 2,416
// messages with it).
func (b *Bridge) deliverMessages(d bus.Delivery, h *wire.Header, msgs []*raftpb.Message) {
	valid := 0
	for i, m := range msgs {
		if !b.messageAgrees(h, m) {
			b.dropMessage(d, h, m, DropMessageMismatch, nil)
			msgs[i] = nil
			continue
		}
		if m.GetType() == raftpb.MsgHeartbeatResp {
			b.meter.heartbeatAnswered(h.From.ID)
		}
		valid++
	}
	b.meter.received(h.From.ID, valid, len(d.Data), h.DirectoryVersion)
	for i, m := range msgs {
		if m == nil {
			continue
		}
		if b.ctx.Err() != nil {
			b.dropInbound(d, h, DropBridgeClosed, countLeft(msgs[i:]), nil)
			return
		}
		if err := b.process(m); err != nil {
			b.dropMessage(d, h, m, DropProcessFailed, err)
		}
	}
}

// process steps one message with a budget of its own, between half the
// ProcessTimeout and all of it, so that the time Raft took for the
// messages before it in the envelope does not eat into its budget: a stall
// costs at most the message being stepped.
func (b *Bridge) process(m *raftpb.Message) error {
	return b.cfg.Raft.Process(b.processContext(), m)
}

// processDeadline is a context shared by the Process calls of half a
// ProcessTimeout.
type processDeadline struct {
	ctx     context.Context
	cancel  context.CancelFunc // never called early: calls may still use ctx; its timer ends it
	renewAt time.Time
}

// processContext returns a context whose deadline is at least half a
// ProcessTimeout away. A context (and its timer) per message cost more
// CPU on a busy leader than stepping the message did; one per half
// timeout costs nothing per message.
func (b *Bridge) processContext() context.Context {
	now := time.Now()
	if d := b.processCtx.Load(); d != nil && now.Before(d.renewAt) {
		return d.ctx
	}
	ctx, cancel := context.WithDeadline(b.ctx, now.Add(b.cfg.ProcessTimeout))
	b.processCtx.Store(&processDeadline{ctx: ctx, cancel: cancel, renewAt: now.Add(b.cfg.ProcessTimeout / 2)})
	return ctx
}

func countLeft(msgs []*raftpb.Message) int {
	n := 0
	for _, m := range msgs {
		if m != nil {
			n++
		}
	}
	return n
}

// messageAgrees reports whether a message of an admitted envelope agrees
// with its header. It must be addressed to this node, must be a type that
// travels between peers (raft-local types never do, and MsgSnap only
// travels through the snapshot protocol, which persists it before Raft
// steps it), and must come from the envelope's sender, except for what
// raft forwards on a member's behalf.
func (b *Bridge) messageAgrees(h *wire.Header, m *raftpb.Message) bool {
	t := m.GetType()
	switch {
	case m.GetTo() != b.self.ID || raft.IsLocalMsg(t) || t == raftpb.MsgSnap:
		return false
	case m.GetFrom() == h.From.ID:
		return true
	}
	return forwarded(t) && b.isMember(m.GetFrom())
}

// forwarded reports whether raft forwards messages of type t keeping the
// original requester in From. A follower's stepFollower sends a MsgProp or
// MsgReadIndex it did not originate on to its leader unchanged but for To
// (a peer sent it to this node while it was leader, or while this node
// believed another node led); the leader answers a MsgReadIndex with a
// MsgReadIndexResp To the original requester, which Send routes to that
// member like any other message.
func forwarded(t raftpb.MessageType) bool {
	return t == raftpb.MsgReadIndex || t == raftpb.MsgProp
}

// isMember reports whether id is a current member: known to the directory
// under an incarnation that, like the ID, is not tombstoned.
func (b *Bridge) isMember(id uint64) bool {
	dir := b.cfg.Directory
	inc, ok := dir.Incarnation(id)
	return ok && !dir.RemovedID(id) && !dir.RemovedIncarnation(inc)
}

// dropMessage counts and logs one dropped message of an admitted envelope.
func (b *Bridge) dropMessage(d bus.Delivery, h *wire.Header, m *raftpb.Message, reason bus.DropReason, err error) {
	b.dropInboundWith(d, h, reason, 1, err,
		slog.String("type", m.GetType().String()),
		slog.String("msg_from", hexID(m.GetFrom())),
		slog.String("msg_to", hexID(m.GetTo())))
}

// dropInbound counts and logs a dropped inbound payload: n Raft messages,
// or, with n 0, one envelope whose messages are not known. It never answers
// the sender: a negative reply could be taken for "you were removed" (the
// rafthttp failure mode) and would hand a forger an amplifier.
func (b *Bridge) dropInbound(d bus.Delivery, h *wire.Header, reason bus.DropReason, n int, err error) {
	b.dropInboundWith(d, h, reason, n, err)
}

func (b *Bridge) dropInboundWith(d bus.Delivery, h *wire.Header, reason bus.DropReason, n int, err error, extra ...slog.Attr) {
	if n > 0 {
		b.meter.dropped(reason, n)
	} else {
		b.meter.droppedEnvelopes(reason, 1)
	}
	b.drops.warn(reason, "raftbridge: dropped inbound payload", func() []slog.Attr {
		attrs := []slog.Attr{
			slog.String("kind", string(d.Kind)),
			slog.String("subject_cluster", d.Cluster.String()),
			slog.String("subject_from", d.From.String()),
			slog.String("subject_to", d.To.String()),
			slog.Int("bytes", len(d.Data)),
		}
		if n > 0 {
			attrs = append(attrs, slog.Int("messages", n))
		} else {
			attrs = append(attrs, slog.Int("envelopes", 1))
		}
		if h != nil {
			attrs = append(attrs,
				slog.String("envelope_cluster", h.Cluster.String()),
				slog.String("peer_id", hexID(h.From.ID)),
				slog.String("peer_incarnation", h.From.Incarnation.String()),
				slog.String("to_id", hexID(h.To.ID)),
				slog.String("to_incarnation", h.To.Incarnation.String()),
			)
		}
		attrs = append(attrs, extra...)
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		return attrs
	})
}

// peerKey is the key under which traffic with Raft ID id is counted: id
// itself if the directory knows it, else 0 ("unknown"), so that no ID a
// delivery claims can grow the metrics.
func (b *Bridge) peerKey(id uint64) uint64 {
	if _, ok := b.cfg.Directory.Incarnation(id); ok {
		return id
	}
	return 0
}
