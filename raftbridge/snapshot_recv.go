package raftbridge

import (
	"context"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// mu guards running: run's goroutine exists only while transfers are
	// in progress (and until the next expiry after), so an idle group
	// holds no goroutine and no ticker for snapshots.
	mu      sync.Mutex
	running bool

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
	buf      []byte          // grows as chunks arrive (grow), never from size; without a store
	sink     *asyncSink      // with a SnapshotStore: where the chunks go, nil once handed on
	written  uint64          // bytes received in order
	sum      uint32          // running CRC-32C of the bytes received
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
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		if !r.b.spawn(r.run) {
			r.b.dropChunk(c.From, DropBridgeClosed, "raftbridge: dropped inbound snapshot chunk", nil)
			return
		}
		r.running = true
	}
	select {
	case r.chunks <- c:
	default:
		r.b.dropChunk(c.From, bus.DropQueueFull, "raftbridge: dropped inbound snapshot chunk", nil)
	}
}

// idle ends run when no transfer is in progress and no chunk waits; the
// next chunk starts it again (deliver holds mu while it queues, so none
// is left behind).
func (r *snapReceiver) idle() bool {
	if len(r.transfers) != 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.chunks) != 0 || len(r.results) != 0 {
		return false
	}
	r.running = false
	return true
}

func (r *snapReceiver) run() {
	b := r.b
	tick := time.NewTicker(max(b.cfg.SnapshotTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			// Closing: discard the partial snapshots (one being applied
			// belongs to its apply goroutine).
			for _, t := range r.transfers {
				r.discard(t)
			}
			return
		case c := <-r.chunks:
			r.handle(c)
		case res := <-r.results:
			r.applied(res)
		case <-tick.C:
			r.expire(time.Now())
			if r.idle() {
				return
			}
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
	case t.written+uint64(len(c.Data)) > t.size || (c.Chunk+1 < t.chunks && len(c.Data) == 0):
		r.dropLying(c, t, "chunk sizes do not add up to the snapshot size")
	case t.sink == nil && !r.grow(t, len(c.Data)):
		r.fail(t, fmt.Sprintf("the snapshots being received would buffer more than MaxSnapshotBytes %d", b.cfg.MaxSnapshotBytes))
	default:
		if t.sink != nil {
			if err := t.sink.write(b.ctx, c.Data); err != nil {
				r.fail(t, "writing to the snapshot store: "+err.Error())
				return
			}
			t.sum = crc32.Update(t.sum, castagnoli, c.Data)
		} else {
			t.buf = append(t.buf, c.Data...)
		}
		t.written += uint64(len(c.Data))
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
	if store := b.cfg.SnapshotStore; store != nil {
		sink, err := store.Create(SnapshotTransfer{From: from.ID, Term: c.Term, Index: c.Index, Size: int64(c.Size)})
		if err != nil {
			b.meter.snapshotReceived(b.peerKey(from.ID), SnapshotFailed)
			b.log.Warn("raftbridge: snapshot refused",
				slog.String("peer_id", hexID(from.ID)),
				slog.String("peer_incarnation", from.Incarnation.String()),
				slog.Uint64("index", c.Index), slog.Uint64("bytes", c.Size),
				slog.String("why", "the snapshot store refused it: "+err.Error()))
			r.ack(from, c.Transfer, c.Index, ackFailed, 0)
			return nil
		}
		t.sink = newAsyncSink(sink)
	}
	r.transfers[from.ID] = t
	delete(r.finished, from.ID)
	return t
}

// complete verifies a fully received snapshot and hands it to the node on
// a goroutine of its own (persisting 50 MiB may take a while and must not
// hold up the bus). With a SnapshotStore that goroutine first commits the
// sink (fsync) and hands the node the reference the store returns.
func (r *snapReceiver) complete(t *inTransfer) {
	b := r.b
	sum := t.sum
	if t.sink == nil {
		sum = crc32.Checksum(t.buf, castagnoli)
	}
	if t.written != t.size || sum != t.crc {
		r.fail(t, "checksum mismatch")
		return
	}
	t.applying = true
	m := t.msg
	m.Snapshot.Data = t.buf
	sink := t.sink
	t.sink = nil // the apply goroutine's now
	b.meter.received(b.peerKey(t.from.ID), 1, 0, 0)
	from, id := t.from.ID, t.id
	ok := b.spawn(func() {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.SnapshotApplyTimeout)
		defer cancel()
		err := commitSink(sink, m)
		if err == nil {
			if sr, ok := b.cfg.Raft.(SnapshotReceiver); ok {
				err = sr.ReceiveSnapshot(ctx, m)
			} else {
				err = b.cfg.Raft.Process(ctx, m)
			}
			if err != nil && sink != nil {
				// Refused by the node: nothing refers to it.
				_ = b.cfg.SnapshotStore.Remove(m.Snapshot.Data)
			}
		}
		select {
		case r.results <- applyResult{from: from, id: id, err: err}:
		case <-b.ctx.Done():
		}
	})
	if ok {
		r.ack(t.from, t.id, t.index, ackApplying, t.chunks)
	} else if sink != nil {
		_ = sink.abort() // closing
	}
}

// commitSink makes a received snapshot durable in the store (fsync) and
// puts the store's reference in m. Without a store (nil) m has the data.
func commitSink(sink *asyncSink, m *raftpb.Message) error {
	if sink == nil {
		return nil
	}
	ref, err := sink.commit()
	if err != nil {
		return fmt.Errorf("committing to the snapshot store: %w", err)
	}
	m.Snapshot.Data = ref
	return nil
}

// sinkQueueLen bounds the chunks waiting to be written to a transfer's
// sink (each below MaxEnvelopeBytes).
const sinkQueueLen = 4

// asyncSink writes a transfer's chunks to its SnapshotSink on a goroutine
// of its own, so that the receiver goroutine validates and acknowledges
// the next chunk while the store writes this one. The queue is bounded:
// when the store falls behind, write blocks the receiver goroutine, which
// then stops acknowledging, and the sender's window holds the rest back.
// A write error is returned by a later write and by commit. Every owner
// ends it with commit or abort, which wait for the goroutine.
type asyncSink struct {
	sink   SnapshotSink
	q      chan []byte
	done   chan struct{}
	failed atomic.Bool // err is set
	skip   atomic.Bool // aborting: discard what is queued
	err    error       // written by the goroutine before failed and done
	ended  bool
}

func newAsyncSink(s SnapshotSink) *asyncSink {
	a := &asyncSink{sink: s, q: make(chan []byte, sinkQueueLen), done: make(chan struct{})}
	go a.loop()
	return a
}

func (a *asyncSink) loop() {
	defer close(a.done)
	for p := range a.q {
		if a.failed.Load() || a.skip.Load() {
			continue
		}
		if _, err := a.sink.Write(p); err != nil {
			a.err = err
			a.failed.Store(true)
		}
	}
}

// write queues p, which must not change afterwards.
func (a *asyncSink) write(ctx context.Context, p []byte) error {
	if a.failed.Load() {
		return a.err
	}
	select {
	case a.q <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish waits for the queued writes and returns the first error.
func (a *asyncSink) finish() error {
	if !a.ended {
		a.ended = true
		close(a.q)
	}
	<-a.done
	return a.err
}

func (a *asyncSink) commit() ([]byte, error) {
	if err := a.finish(); err != nil {
		_ = a.sink.Abort()
		return nil, err
	}
	ref, err := a.sink.Commit()
	if err != nil {
		_ = a.sink.Abort()
	}
	return ref, err
}

func (a *asyncSink) abort() error {
	a.skip.Store(true)
	_ = a.finish()
	return a.sink.Abort()
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

// discard releases what a transfer holds: its buffer, or its sink, whose
// partial data the store removes.
func (r *snapReceiver) discard(t *inTransfer) {
	r.release(t)
	if t.sink != nil {
		if err := t.sink.abort(); err != nil {
			r.b.log.Warn("raftbridge: discarding a partial snapshot failed",
				slog.String("peer_id", hexID(t.from.ID)), slog.Uint64("index", t.index), slog.String("error", err.Error()))
		}
		t.sink = nil
	}
}

// abandon forgets a transfer and discards what it holds.
func (r *snapReceiver) abandon(t *inTransfer, result SnapshotResult, why string) {
	b := r.b
	delete(r.transfers, t.from.ID)
	r.discard(t)
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
		Header:   b.headerWithVersion(to, dir.Version()),
		Transfer: transfer, Index: index, Status: st, Next: next,
	}
	buf := appendSnapAck(make([]byte, 0, wire.MaxHeaderSize+ackBodySize), &a)
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
