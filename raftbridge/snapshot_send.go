package raftbridge

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapSenders runs one sender goroutine per destination with a snapshot to
// send. A goroutine exists only while it has work and exits when idle.
type snapSenders struct {
	b *Bridge

	mu    sync.Mutex
	peers map[uint64]*snapSender
}

// snapJob is one MsgSnap to deliver. meta was marshalled on the raft loop;
// data is the snapshot's data (with a SnapshotStore, its reference),
// immutable by raft's contract, so it is read from the sender goroutine
// without a copy.
type snapJob struct {
	to    wire.Endpoint
	meta  []byte
	data  []byte
	term  uint64
	index uint64
	size  int64 // of the data sent, set by transfer
}

// snapSender owns the transfers to one destination, one at a time.
type snapSender struct {
	b  *Bridge
	s  *snapSenders
	to uint64

	pending *snapJob      // guarded by s.mu; the newest job wins
	wake    chan struct{} // capacity 1: a job was queued
	acks    chan *snapAck // acks from the destination

	backoff time.Duration // owned by the goroutine
}

// ackQueueLen bounds the acks waiting for a sender goroutine. Acks are
// cumulative, so dropping one when the queue is full loses nothing that
// the next one or a resend does not recover.
const ackQueueLen = 32

func newSnapSenders(b *Bridge) *snapSenders {
	return &snapSenders{b: b, peers: make(map[uint64]*snapSender)}
}

// enqueue is called by Send, on the raft loop, for a MsgSnap to a resolved
// destination. It marshals the message without its data there and then
// (marshalling belongs to the raft loop) and hands the rest to the
// destination's sender goroutine.
func (s *snapSenders) enqueue(dst wire.Endpoint, m *raftpb.Message) {
	b := s.b
	meta, err := proto.Marshal(withoutSnapshotData(m))
	if err != nil {
		b.dropOutbound(dst, []*raftpb.Message{m}, DropEncode, err)
		return
	}
	md := m.GetSnapshot().GetMetadata()
	job := &snapJob{
		to: dst, meta: meta, data: m.GetSnapshot().GetData(),
		term: md.GetTerm(), index: md.GetIndex(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := s.peers[dst.ID]
	if sn == nil {
		sn = &snapSender{b: b, s: s, to: dst.ID, wake: make(chan struct{}, 1), acks: make(chan *snapAck, ackQueueLen)}
		if !b.spawn(sn.run) {
			b.meter.dropped(DropBridgeClosed, 1)
			return
		}
		s.peers[dst.ID] = sn
	}
	if sn.pending != nil {
		// Never started: Raft has already moved on to the newer snapshot.
		b.meter.snapshotSent(dst.ID, SnapshotAbandoned)
	}
	sn.pending = job
	select {
	case sn.wake <- struct{}{}:
	default:
	}
}

// ack routes a validated acknowledgement to the sender for its source.
func (s *snapSenders) ack(a *snapAck) {
	s.mu.Lock()
	sn := s.peers[a.From.ID]
	s.mu.Unlock()
	if sn == nil {
		return // a late ack for a finished transfer
	}
	select {
	case sn.acks <- a:
	default:
	}
}

// take returns the pending job, or removes the sender from the map and
// returns nil when there is none (the goroutine then exits). Both happen
// under s.mu, so enqueue either sees the sender and gives it the job, or
// does not see it and starts a new one.
func (sn *snapSender) take() *snapJob {
	sn.s.mu.Lock()
	defer sn.s.mu.Unlock()
	job := sn.pending
	sn.pending = nil
	if job == nil {
		delete(sn.s.peers, sn.to)
	}
	return job
}

func (sn *snapSender) hasPending() bool {
	sn.s.mu.Lock()
	defer sn.s.mu.Unlock()
	return sn.pending != nil
}

func (sn *snapSender) run() {
	b := sn.b
	for {
		job := sn.take()
		if job == nil {
			return
		}
		if sn.backoff > 0 {
			// After a failure, wait before trying again, so that a dead
			// follower does not get snapshots in a tight loop
			// (etcd#3292/#3778). A job queued meanwhile replaces this one.
			t := time.NewTimer(sn.backoff)
			select {
			case <-b.ctx.Done():
				t.Stop()
				b.meter.snapshotSent(sn.to, SnapshotAbandoned)
				return
			case <-t.C:
			}
			if sn.hasPending() {
				b.meter.snapshotSent(sn.to, SnapshotAbandoned)
				continue
			}
		}
		start := time.Now()
		result, why := sn.transfer(job)
		b.meter.snapshotSent(sn.to, result)
		attrs := []any{
			slog.String("peer_id", hexID(job.to.ID)),
			slog.String("peer_incarnation", job.to.Incarnation.String()),
			slog.Uint64("index", job.index),
			slog.Uint64("term", job.term),
			slog.Int64("bytes", job.size),
			slog.Duration("duration", time.Since(start)),
			slog.String("result", string(result)),
		}
		switch {
		case result == SnapshotSuccess:
			sn.backoff = 0
			b.meter.sent(job.to.ID, 1, 0)
			b.reports.reportSnapshot(job.to.ID, raft.SnapshotFinish)
			b.log.Info("raftbridge: snapshot sent", attrs...)
		case b.ctx.Err() != nil:
			return // closing: no report, the node is going away
		case why == supersededReason:
			// Raft has a newer snapshot for this peer in the queue; a report
			// now would be taken for that one.
		default:
			sn.backoff = min(max(2*sn.backoff, b.cfg.SnapshotRetryBackoff), b.cfg.SnapshotTimeout)
			b.reports.reportUnreachable(job.to.ID)
			b.reports.reportSnapshot(job.to.ID, raft.SnapshotFailure)
			b.log.Warn("raftbridge: snapshot transfer failed", append(attrs, slog.String("why", why), slog.Duration("retry_backoff", sn.backoff))...)
		}
	}
}

const supersededReason = "superseded by a newer snapshot"

// transfer sends one snapshot with a window of unacknowledged chunks and
// go-back-N recovery: the receiver accepts chunks strictly in order and
// acknowledges cumulatively; an out-of-order chunk earns a gap ack and the
// sender resends from the receiver's position; an interval without
// progress resends from the last acknowledged chunk. The transfer ends with
// the receiver's done or failed ack, or after SnapshotTimeout without
// progress.
//
// The data is read chunk by chunk (snapData): from memory, or, with a
// SnapshotStore, from the store's source straight into each chunk
// envelope, re-read when a resend goes back; only the window's envelopes
// are in memory.
func (sn *snapSender) transfer(job *snapJob) (SnapshotResult, string) {
	b := sn.b
	chunkSize := b.cfg.MaxEnvelopeBytes - chunkOverhead - len(job.meta)
	if chunkSize < 1 {
		return SnapshotFailed, "snapshot metadata does not fit in an envelope"
	}
	data, err := b.openSnapData(job.data)
	if err != nil {
		return SnapshotFailed, err.Error()
	}
	defer data.close()
	size := data.size()
	job.size = size
	nchunks := max(1, (size+int64(chunkSize)-1)/int64(chunkSize))
	if nchunks > math.MaxUint32 {
		return SnapshotFailed, "snapshot has too many chunks"
	}
	chunks := uint32(nchunks)
	var acked, next uint32 // chunks acknowledged in order; next chunk to send
	window := newSnapWindow(uint32(b.cfg.SnapshotWindow))
	c := snapChunk{
		Header:   b.header(job.to),
		Transfer: rand.Uint64(),
		Term:     job.term,
		Index:    job.index,
		Chunks:   chunks,
		Size:     uint64(size),
		CRC:      data.crc(),
	}
	var rewound int64 = -1 // chunk a gap ack last sent us back to
	var ackedAtTick uint32 // acked at the previous resend tick
	heard := false         // an ack arrived since the previous tick
	lastProgress := time.Now()
	tick := time.NewTicker(b.cfg.SnapshotResendInterval)
	defer tick.Stop()
	for {
		if why := b.destinationChanged(job); why != "" {
			return SnapshotAbandoned, why
		}
		for next < chunks && (next < acked || next-acked < window.size) {
			c.Chunk = next
			off := int64(next) * int64(chunkSize)
			n := int(min(int64(chunkSize), size-off))
			c.Meta = nil
			if next == 0 {
				c.Meta = job.meta
			}
			c.DirectoryVersion = b.cfg.Directory.Version()
			buf := appendSnapChunkHead(make([]byte, 0, chunkOverhead+len(c.Meta)+n), &c, n)
			if buf, err = data.appendChunk(buf, off, n); err != nil {
				return SnapshotFailed, "reading the snapshot: " + err.Error()
			}
			if err := b.cfg.Bus.Send(job.to.Incarnation, bus.KindSnap, buf); err != nil {
				// The bus is full or down: wait for the next tick rather
				// than spin; the progress timeout ends a hopeless transfer.
				b.dropChunk(job.to, bus.ReasonOf(err), "raftbridge: dropped outbound snapshot chunk", err)
				break
			}
			b.meter.sent(job.to.ID, 0, len(buf))
			next++
		}
		select {
		case <-b.ctx.Done():
			return SnapshotAbandoned, "bridge closed"
		case <-sn.wake:
			if sn.hasPending() {
				return SnapshotAbandoned, supersededReason
			}
		case a := <-sn.acks:
			if a.Transfer != c.Transfer || a.From.Incarnation != job.to.Incarnation || a.Next > chunks {
				continue
			}
			heard = true
			switch a.Status {
			case ackDone:
				return SnapshotSuccess, ""
			case ackFailed:
				return SnapshotFailed, "the receiver failed the transfer"
			case ackApplying:
				acked, next = chunks, chunks
				lastProgress = time.Now()
			case ackProgress, ackGap:
				if a.Next > acked {
					acked = a.Next
					next = max(next, acked)
					lastProgress = time.Now()
					window.progress(acked)
				}
				// Go back once per position: a window of out-of-order
				// chunks yields several gap acks for the same position.
				if a.Status == ackGap && a.Next >= acked && a.Next < next && int64(a.Next) != rewound {
					next = a.Next
					rewound = int64(a.Next)
					window.loss(acked)
				}
			}
		case <-tick.C:
			if time.Since(lastProgress) > b.cfg.SnapshotTimeout {
				return SnapshotTimeout, "no progress within the snapshot timeout"
			}
			switch {
			case acked >= chunks:
				// Everything arrived and the receiver's node is applying:
				// poke it with the last chunk when it has gone quiet, so
				// that a lost done ack is repeated.
				if !heard {
					next = chunks - 1
				}
			case acked == ackedAtTick:
				next = acked // no progress for a whole interval
				rewound = -1
				window.loss(acked)
			}
			ackedAtTick = acked
			heard = false
		}
	}
}

// snapWindow is the number of chunks a transfer may have unacknowledged.
// It starts at the configured SnapshotWindow (what a lossless broker
// sustains), halves on every loss, down to 4, and grows back by one for
// each window of chunks acknowledged in order. Go-back-N resends the whole
// window after a loss, so a large fixed window on a lossy or overloaded
// path spends its bandwidth on resends and overflows the receiver's queue:
// a 50 MiB transfer over 5% loss and 20% reordering took 13-25 s at a
// fixed window of 8-16 (four runs at once under -race) and 3.4 s adaptive.
type snapWindow struct {
	size, min, max uint32
	mark           uint32 // acked when the size last changed
}

func newSnapWindow(max uint32) snapWindow {
	return snapWindow{size: max, min: min(max, 4), max: max}
}

// loss shrinks the window; acked is the in-order position.
func (w *snapWindow) loss(acked uint32) {
	w.size, w.mark = max(w.min, w.size/2), acked
}

// progress grows the window by one once a window's worth of chunks has
// been acknowledged in order since it last changed.
func (w *snapWindow) progress(acked uint32) {
	if acked-w.mark >= w.size && w.size < w.max {
		w.size, w.mark = w.size+1, acked
	}
}

// snapData is the data of an outgoing snapshot, read one chunk at a time.
type snapData interface {
	size() int64
	crc() uint32
	// appendChunk appends the n bytes at off to dst, which has room.
	appendChunk(dst []byte, off int64, n int) ([]byte, error)
	close()
}

// openSnapData resolves an outgoing MsgSnap's Snapshot.Data: the data
// itself without a SnapshotStore, else a reference to open in the store.
func (b *Bridge) openSnapData(data []byte) (snapData, error) {
	store := b.cfg.SnapshotStore
	if store == nil {
		return memSnapData(data), nil
	}
	src, err := store.Open(data)
	if err != nil {
		return nil, fmt.Errorf("opening the snapshot in the store: %w", err)
	}
	if src.Size() < 0 {
		src.Close()
		return nil, fmt.Errorf("the store's snapshot has a negative size %d", src.Size())
	}
	return &storeSnapData{src: src}, nil
}

// memSnapData is data held in memory, as raft handed it over.
type memSnapData []byte

func (d memSnapData) size() int64 { return int64(len(d)) }
func (d memSnapData) crc() uint32 { return crc32.Checksum(d, castagnoli) }
func (d memSnapData) appendChunk(dst []byte, off int64, n int) ([]byte, error) {
	return append(dst, d[off:off+int64(n)]...), nil
}
func (memSnapData) close() {}

// storeSnapData reads a SnapshotStore's source straight into each chunk
// envelope.
type storeSnapData struct {
	src SnapshotSource
}

func (d *storeSnapData) size() int64 { return d.src.Size() }
func (d *storeSnapData) crc() uint32 { return d.src.CRC32C() }
func (d *storeSnapData) appendChunk(dst []byte, off int64, n int) ([]byte, error) {
	l := len(dst)
	dst = slices.Grow(dst, n)[:l+n]
	k, err := d.src.ReadAt(dst[l:], off)
	if k == n {
		return dst, nil // io.ReaderAt may return io.EOF with the last bytes
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}
func (d *storeSnapData) close() { d.src.Close() }

// destinationChanged reports why a transfer's destination is no longer the
// incarnation it was resolved to, or "" if it still is.
func (b *Bridge) destinationChanged(job *snapJob) string {
	dir := b.cfg.Directory
	if dir.RemovedID(job.to.ID) || dir.RemovedIncarnation(job.to.Incarnation) {
		return "the destination was tombstoned"
	}
	inc, ok := dir.Incarnation(job.to.ID)
	switch {
	case ok && inc != job.to.Incarnation:
		return "the destination's incarnation changed"
	case !ok:
		return "the destination left the directory"
	}
	return ""
}

// snapshotFieldNumber is raftpb.Message's snapshot field.
const snapshotFieldNumber protoreflect.FieldNumber = 9

// withoutSnapshotData returns a shallow copy of a MsgSnap whose snapshot
// keeps its metadata but not its data, for marshalling the metadata without
// copying the data. It goes through protoreflect so that fields added to
// raftpb.Message later are carried too. The copy shares m's sub-messages and
// must not outlive the marshalling.
func withoutSnapshotData(m *raftpb.Message) *raftpb.Message {
	out := &raftpb.Message{}
	dst := out.ProtoReflect()
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != snapshotFieldNumber {
			dst.Set(fd, v)
		}
		return true
	})
	if s := m.GetSnapshot(); s != nil {
		out.Snapshot = &raftpb.Snapshot{Metadata: s.GetMetadata()}
	}
	return out
}
