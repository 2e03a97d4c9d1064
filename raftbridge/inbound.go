package raftbridge

import (
	"context"
	"errors"
	"log/slog"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
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
	b.meter.dropped(reason, n)
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
func (b *Bridge) deliver(d bus.Delivery) {
	b.inflight.RLock()
	defer b.inflight.RUnlock()
	if b.closed.Load() {
		b.dropInbound(d, nil, DropBridgeClosed, 1, nil)
		return
	}
	h, body, err := DecodeHeader(d.Data)
	if err != nil {
		reason := DropDecode
		if errors.Is(err, ErrVersion) {
			reason = DropVersion
		}
		b.dropInbound(d, nil, reason, 1, err)
		return
	}
	switch d.Kind {
	case bus.KindMsg:
		var msgs []*raftpb.Message
		if h.Kind != EnvelopeMessages {
			err = errors.New("not a message envelope")
		} else {
			msgs, err = decodeMessages(body)
		}
		if err != nil {
			b.dropInbound(d, &h, DropDecode, 1, err)
			return
		}
		b.deliverMessages(d, &h, msgs)
	case bus.KindSnap:
		switch h.Kind {
		case EnvelopeSnapChunk:
			c, err := decodeSnapChunk(h, body)
			if err != nil {
				b.dropInbound(d, &h, DropDecode, 1, err)
				return
			}
			if known, ok := b.admit(d, &h, 1); ok {
				b.noteSender(&h, known, 0, len(d.Data))
				b.snapIn.deliver(c)
			}
		case EnvelopeSnapAck:
			a, err := decodeSnapAck(h, body)
			if err != nil {
				b.dropInbound(d, &h, DropDecode, 1, err)
				return
			}
			if known, ok := b.admit(d, &h, 1); ok {
				b.noteSender(&h, known, 0, len(d.Data))
				b.snapOut.ack(a)
			}
		default:
			b.dropInbound(d, &h, DropDecode, 1, errors.New("not a snapshot envelope"))
		}
	default:
		b.dropInbound(d, &h, DropUnknownKind, 1, nil)
	}
}

// admit runs the identity checks, in the documented order, on a decoded
// envelope header and the subject it arrived on. n is what a drop counts.
// known reports whether the directory knows the sender's Raft ID.
func (b *Bridge) admit(d bus.Delivery, h *Header, n int) (known, ok bool) {
	dir := b.cfg.Directory
	var reason bus.DropReason
	switch {
	case h.Cluster != b.cfg.Cluster || d.Cluster != b.cfg.Cluster:
		reason = DropClusterMismatch
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
		case ok && inc != h.From.Incarnation:
			reason = DropStaleIncarnation
		case !ok && b.memberOf(h.From.Incarnation, h.From.ID):
			// An unknown Raft ID claimed by a member's incarnation: the
			// incarnation is known under another ID.
			reason = DropStaleIncarnation
		default:
			return ok, true
		}
	}
	b.dropInbound(d, h, reason, n, nil)
	return false, false
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

// noteSender counts validated traffic and, for a sender the directory does
// not know, refreshes its provisional reply route.
func (b *Bridge) noteSender(h *Header, known bool, msgs, bytes int) {
	from := h.From.ID
	if !known {
		from = 0
		b.routes.remember(h.From.ID, h.From.Incarnation)
		if msgs > 0 {
			b.meter.unknownSender(msgs)
		}
	}
	b.meter.received(from, msgs, bytes, h.DirectoryVersion)
}

func (b *Bridge) deliverMessages(d bus.Delivery, h *Header, msgs []*raftpb.Message) {
	known, ok := b.admit(d, h, len(msgs))
	if !ok {
		return
	}
	// The envelope's header was checked; now its content must agree with
	// it. An envelope that lies about one message is not trusted with any.
	// Raft-local types never travel, and MsgSnap only travels through the
	// snapshot protocol (which persists it before Raft steps it).
	for _, m := range msgs {
		t := m.GetType()
		if m.GetFrom() != h.From.ID || m.GetTo() != b.self.ID || raft.IsLocalMsg(t) || t == raftpb.MsgSnap {
			b.dropInbound(d, h, DropMessageMismatch, len(msgs), nil)
			return
		}
	}
	b.noteSender(h, known, len(msgs), len(d.Data))
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ProcessTimeout)
	defer cancel()
	for _, m := range msgs {
		if err := b.cfg.Raft.Process(ctx, m); err != nil {
			b.dropInbound(d, h, DropProcessFailed, 1, err)
		}
	}
}

// dropInbound counts and logs a dropped inbound payload. It never answers
// the sender: a negative reply could be taken for "you were removed" (the
// rafthttp failure mode) and would hand a forger an amplifier.
func (b *Bridge) dropInbound(d bus.Delivery, h *Header, reason bus.DropReason, n int, err error) {
	b.meter.dropped(reason, n)
	b.drops.warn(reason, "raftbridge: dropped inbound payload", func() []slog.Attr {
		attrs := []slog.Attr{
			slog.String("kind", string(d.Kind)),
			slog.String("subject_cluster", d.Cluster.String()),
			slog.String("subject_from", d.From.String()),
			slog.String("subject_to", d.To.String()),
			slog.Int("bytes", len(d.Data)),
			slog.Int("count", n),
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
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		return attrs
	})
}

// peerKey is the key under which inbound traffic from Raft ID id is
// counted: id itself if the directory knows it, else 0, so that IDs made up
// by senders cannot grow the metrics.
func (b *Bridge) peerKey(id uint64) uint64 {
	if _, ok := b.cfg.Directory.Incarnation(id); ok {
		return id
	}
	return 0
}
