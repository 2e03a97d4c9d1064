package raftbridge

import (
	"context"
	"fmt"
	"hash/crc32"
	"log/slog"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// snapReceiver reassembles incoming snapshots. One goroutine (run) owns all
// transfer state; the bus delivery goroutine hands it validated chunks
// through a bounded queue, and apply goroutines hand back their results.
type snapReceiver struct {
	b       *Bridge
	chunks  chan *snapChunk
	results chan applyResult

	// Owned by run.
	transfers map[uint64]*inTransfer      // by source Raft ID: one at a time per sender
	finished  map[uint64]finishedTransfer // last outcome per source, to repeat its ack
	buffered  int64                       // capacity of the buffers of transfers in progress
}

// inTransfer is a transfer being received.
type inTransfer struct {
	from     wire.Endpoint
	id       uint64
	term     uint64
	index    uint64
	chunks   uint32
	size     uint64
	crc      uint32
	msg      *raftpb.Message // decoded from chunk 0's metadata
	buf      []byte          // grows as chunks arrive (grow), never from size
	next     uint32          // chunks received in order
	last     time.Time       // last accepted chunk
	applying bool            // complete and handed to the node
}

type finishedTransfer struct {
	id     uint64
	index  uint64
	status ackStatus // ackDone or ackFailed
	chunks uint32
	at     time.Time
}

type applyResult struct {
	from uint64
	id   uint64
	err  error
}

// chunkQueueLen bounds the chunks waiting for the receiver goroutine (at
// most this many envelopes, each below MaxEnvelopeBytes). A chunk that does
// not fit is dropped as queue_full; the sender resends it.
const chunkQueueLen = 16

func newSnapReceiver(b *Bridge) *snapReceiver {
	return &snapReceiver{
		b:         b,
		chunks:    make(chan *snapChunk, chunkQueueLen),
		results:   make(chan applyResult, 1),
		transfers: make(map[uint64]*inTransfer),
		finished:  make(map[uint64]finishedTransfer),
	}
}

// deliver is called on the bus delivery goroutine with a chunk whose
// envelope passed the identity checks. It never blocks.
func (r *snapReceiver) deliver(c *snapChunk) {
	select {
	case r.chunks <- c:
	default:
		r.b.dropChunk(c.From, bus.DropQueueFull, "raftbridge: dropped inbound snapshot chunk", nil)
	}
}

func (r *snapReceiver) run() {
	b := r.b
	tick := time.NewTicker(max(b.cfg.SnapshotTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case c := <-r.chunks:
			r.handle(c)
		case res := <-r.results:
			r.applied(res)
		case <-tick.C:
			r.expire(time.Now())
		}
	}
}

func (r *snapReceiver) handle(c *snapChunk) {
	b := r.b
	from := c.From
	t := r.transfers[from.ID]
	if t != nil && t.from.Incarnation != from.Incarnation && !t.applying {
		r.abandon(t, SnapshotAbandoned, "the sender's incarnation changed")
		t = nil
	}
	if t != nil && t.id != c.Transfer {
		switch {
		case t.applying:
			// The node is busy with the previous snapshot; the sender
			// retries after its backoff.
			r.ack(from, c.Transfer, c.Index, ackFailed, 0)
			return
		case c.Chunk != 0:
			r.ack(from, c.Transfer, c.Index, ackGap, 0)
			return
		}
		r.abandon(t, SnapshotAbandoned, "superseded by a newer transfer from the same sender")
		t = nil
	}
	if t == nil {
		if f, ok := r.finished[from.ID]; ok && f.id == c.Transfer {
			r.ack(from, f.id, f.index, f.status, f.chunks) // our final ack was lost
			return
		}
		if c.Chunk != 0 {
			// Chunk 0 was lost, or this receiver restarted: start over.
			r.ack(from, c.Transfer, c.Index, ackGap, 0)
			return
		}
		if t = r.begin(c); t == nil {
			return
		}
	}
	if c.Term != t.term || c.Index != t.index || c.Chunks != t.chunks || c.Size != t.size || c.CRC != t.crc {
		r.dropLying(c, t, "a chunk disagrees with the transfer's first chunk")
		return
	}
	switch {
	case t.applying:
		r.ack(from, t.id, t.index, ackApplying, t.chunks)
	case c.Chunk < t.next:
		r.ack(from, t.id, t.index, ackProgress, t.next) // duplicate
	case c.Chunk > t.next:
		r.ack(from, t.id, t.index, ackGap, t.next)
	case uint64(len(t.buf))+uint64(len(c.Data)) > t.size || (c.Chunk+1 < t.chunks && len(c.Data) == 0):
		r.dropLying(c, t, "chunk sizes do not add up to the snapshot size")
	case !r.grow(t, len(c.Data)):
		r.fail(t, fmt.Sprintf("the snapshots being received would buffer more than MaxSnapshotBytes %d", b.cfg.MaxSnapshotBytes))
	default:
		t.buf = append(t.buf, c.Data...)
		t.next++
		t.last = time.Now()
		if t.next < t.chunks {
			r.ack(from, t.id, t.index, ackProgress, t.next)
			return
		}
		r.complete(t)
	}
}

// grow makes room in t.buf for n more bytes and reports whether it could
// within MaxSnapshotBytes, counted over the buffers of every transfer in
// progress. The buffer grows with the data that actually arrived (doubling,
// capped at the snapshot's claimed size), never from the claimed size
// alone: a forged chunk 0 claiming a gigabyte costs the bytes it carries.
// The caller has checked that n more bytes stay within t.size.
func (r *snapReceiver) grow(t *inTransfer, n int) bool {
	need := len(t.buf) + n
	if need <= cap(t.buf) {
		return true
	}
	size := int(t.size) // <= MaxSnapshotBytes, checked by begin
	newCap := min(max(2*cap(t.buf), need), size)
	if r.buffered-int64(cap(t.buf))+int64(newCap) > r.b.cfg.MaxSnapshotBytes {
		return false
	}
	buf := make([]byte, len(t.buf), newCap)
	copy(buf, t.buf)
	r.buffered += int64(newCap - cap(t.buf))
	t.buf = buf
	return true
}

// begin starts a transfer from its chunk 0. A snapshot larger than
// MaxSnapshotBytes is refused with a failed ack (a protocol answer: the
// sender should not retry at once); a chunk 0 that lies about its content
// is dropped without an answer, like any other drop. Either way begin
// returns nil. Nothing is allocated for the claimed size.
func (r *snapReceiver) begin(c *snapChunk) *inTransfer {
	b := r.b
	from := c.From
	if c.Size > uint64(b.cfg.MaxSnapshotBytes) {
		b.meter.snapshotReceived(b.peerKey(from.ID), SnapshotFailed)
		b.log.Warn("raftbridge: snapshot refused",
			slog.String("peer_id", hexID(from.ID)),
			slog.String("peer_incarnation", from.Incarnation.String()),
			slog.Uint64("index", c.Index), slog.Uint64("bytes", c.Size),
			slog.String("why", fmt.Sprintf("it exceeds MaxSnapshotBytes %d", b.cfg.MaxSnapshotBytes)))
		r.ack(from, c.Transfer, c.Index, ackFailed, 0)
		return nil
	}
	m := new(raftpb.Message)
	if err := wire.UnmarshalOpts.Unmarshal(c.Meta, m); err != nil {
		b.dropChunk(from, DropDecode, "raftbridge: dropped snapshot chunk with undecodable metadata", err)
		return nil
	}
	md := m.GetSnapshot().GetMetadata()
	if m.GetType() != raftpb.MsgSnap || m.GetFrom() != from.ID || m.GetTo() != b.self.ID || md == nil ||
		md.GetIndex() == 0 || md.GetIndex() != c.Index || md.GetTerm() != c.Term || len(m.GetSnapshot().GetData()) != 0 {
		// md == nil also rules out a missing Snapshot, which complete
		// fills in; index 0 is raft's "no snapshot".
		b.dropChunk(from, DropMessageMismatch, "raftbridge: dropped snapshot chunk whose metadata disagrees with its envelope", nil)
		return nil
	}
	t := &inTransfer{
		from: from, id: c.Transfer, term: c.Term, index: c.Index, chunks: c.Chunks,
		size: c.Size, crc: c.CRC, msg: m, last: time.Now(),
	}
	r.transfers[from.ID] = t
	delete(r.finished, from.ID)
	return t
}

// complete verifies a fully received snapshot and hands it to the node on
// a goroutine of its own (persisting 50 MiB may take a while and must not
// hold up the bus).
func (r *snapReceiver) complete(t *inTransfer) {
	b := r.b
	if uint64(len(t.buf)) != t.size || crc32.Checksum(t.buf, castagnoli) != t.crc {
		r.fail(t, "checksum mismatch")
		return
	}
	t.applying = true
	m := t.msg
	m.Snapshot.Data = t.buf
	b.meter.received(b.peerKey(t.from.ID), 1, 0, 0)
	from, id := t.from.ID, t.id
	ok := b.spawn(func() {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.SnapshotApplyTimeout)
		defer cancel()
		var err error
		if sr, ok := b.cfg.Raft.(SnapshotReceiver); ok {
			err = sr.ReceiveSnapshot(ctx, m)
		} else {
			err = b.cfg.Raft.Process(ctx, m)
		}
		select {
		case r.results <- applyResult{from: from, id: id, err: err}:
		case <-b.ctx.Done():
		}
	})
	if ok {
		r.ack(t.from, t.id, t.index, ackApplying, t.chunks)
	}
}

// applied finishes a transfer once the node has taken (or refused) it.
func (r *snapReceiver) applied(res applyResult) {
	b := r.b
	t := r.transfers[res.from]
	if t == nil || t.id != res.id {
		return
	}
	delete(r.transfers, res.from)
	r.release(t)
	status, result := ackDone, SnapshotSuccess
	if res.err != nil {
		// Not a drop: the sender hears of it (failed ack) and Raft retries.
		status, result = ackFailed, SnapshotFailed
		b.log.Warn("raftbridge: node refused a snapshot",
			slog.String("peer_id", hexID(t.from.ID)), slog.Uint64("index", t.index), slog.String("error", res.err.Error()))
	} else {
		b.log.Info("raftbridge: snapshot received",
			slog.String("peer_id", hexID(t.from.ID)), slog.Uint64("index", t.index), slog.Uint64("bytes", t.size))
	}
	b.meter.snapshotReceived(b.peerKey(t.from.ID), result)
	r.finished[t.from.ID] = finishedTransfer{id: t.id, index: t.index, status: status, chunks: t.chunks, at: time.Now()}
	r.ack(t.from, t.id, t.index, status, t.chunks)
}

// dropLying drops a chunk whose content contradicts its transfer, and the
// transfer with it, without answering: such a chunk is a drop like any
// other ("message_mismatch"). The sender's resends then start over from
// chunk 0, or it times out.
func (r *snapReceiver) dropLying(c *snapChunk, t *inTransfer, why string) {
	r.b.dropChunk(c.From, DropMessageMismatch, "raftbridge: dropped snapshot chunk: "+why, nil)
	r.abandon(t, SnapshotFailed, why)
}

// fail ends a transfer with a failed ack to its sender.
func (r *snapReceiver) fail(t *inTransfer, why string) {
	r.abandon(t, SnapshotFailed, why)
	r.finished[t.from.ID] = finishedTransfer{id: t.id, index: t.index, status: ackFailed, at: time.Now()}
	r.ack(t.from, t.id, t.index, ackFailed, 0)
}

// release stops counting t's buffer (the node owns it once applied).
func (r *snapReceiver) release(t *inTransfer) {
	r.buffered -= int64(cap(t.buf))
}

// abandon forgets a transfer and releases its buffer.
func (r *snapReceiver) abandon(t *inTransfer, result SnapshotResult, why string) {
	b := r.b
	delete(r.transfers, t.from.ID)
	r.release(t)
	b.meter.snapshotReceived(b.peerKey(t.from.ID), result)
	b.log.Warn("raftbridge: snapshot transfer abandoned",
		slog.String("peer_id", hexID(t.from.ID)),
		slog.String("peer_incarnation", t.from.Incarnation.String()),
		slog.Uint64("index", t.index),
		slog.Uint64("received_chunks", uint64(t.next)),
		slog.Uint64("chunks", uint64(t.chunks)),
		slog.String("result", string(result)),
		slog.String("why", why))
}

// expire abandons transfers that stalled or whose sender is no longer the
// incarnation it was, and forgets old outcomes.
func (r *snapReceiver) expire(now time.Time) {
	dir := r.b.cfg.Directory
	timeout := r.b.cfg.SnapshotTimeout
	for _, t := range r.transfers {
		if t.applying {
			continue // bounded by SnapshotApplyTimeout
		}
		inc, known := dir.Incarnation(t.from.ID)
		switch {
		case dir.RemovedID(t.from.ID) || dir.RemovedIncarnation(t.from.Incarnation):
			r.abandon(t, SnapshotAbandoned, "the sender was tombstoned")
		case known && inc != t.from.Incarnation:
			r.abandon(t, SnapshotAbandoned, "the sender's incarnation changed")
		case now.Sub(t.last) > timeout:
			r.abandon(t, SnapshotTimeout, "no chunk within the snapshot timeout")
		}
	}
	for id, f := range r.finished {
		if now.Sub(f.at) > 2*timeout {
			delete(r.finished, id)
		}
	}
}

// ack sends an acknowledgement to a validated sender. It is never sent to
// a tombstoned one. A lost ack is recovered by the sender's resends.
func (r *snapReceiver) ack(to wire.Endpoint, transfer, index uint64, st ackStatus, next uint32) {
	b := r.b
	dir := b.cfg.Directory
	if dir.RemovedID(to.ID) || dir.RemovedIncarnation(to.Incarnation) {
		return
	}
	a := snapAck{
		Header:   wire.Header{Cluster: b.cfg.Cluster, From: b.self, To: to, DirectoryVersion: dir.Version()},
		Transfer: transfer, Index: index, Status: st, Next: next,
	}
	buf := appendSnapAck(make([]byte, 0, wire.HeaderSize+ackBodySize), &a)
	if err := b.cfg.Bus.Send(to.Incarnation, bus.KindSnap, buf); err != nil {
		b.dropChunk(to, bus.ReasonOf(err), "raftbridge: dropped outbound snapshot ack", err)
		return
	}
	b.meter.sent(to.ID, 0, len(buf))
}

// dropChunk counts and logs a snapshot chunk or ack that was dropped: one
// envelope, no Raft message.
func (b *Bridge) dropChunk(peer wire.Endpoint, reason bus.DropReason, msg string, err error) {
	b.meter.droppedEnvelopes(reason, 1)
	b.drops.warn(reason, msg, func() []slog.Attr {
		attrs := []slog.Attr{
			slog.String("peer_id", hexID(peer.ID)),
			slog.String("peer_incarnation", peer.Incarnation.String()),
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		return attrs
	})
}
