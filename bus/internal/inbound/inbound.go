package inbound

import (
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/internal/counters"
	"github.com/raftbus/raftbus/internal/wire"
)

// maxCachedSubjects bounds the parsed-subject cache. A cluster has a handful
// of peers and kinds, so the cache normally holds a few entries; the bound
// only matters when someone publishes many distinct bad subjects.
const maxCachedSubjects = 1024

// warnEvery limits drop warnings to one per reason per interval.
const warnEvery = time.Second

type parsed struct {
	src  uuid.UUID
	kind bus.Kind
	ok   bool
}

type warnState struct {
	last       time.Time
	suppressed int
}

// Handler turns inbound frames into Receiver calls.
type Handler struct {
	prefix   string
	cluster  uuid.UUID
	self     uuid.UUID
	recv     bus.Receiver
	counters *counters.Counters
	log      *slog.Logger

	subjects map[string]parsed
	warned   map[bus.DropReason]*warnState

	// The frame being delivered; deliverFn is bound once so that decoding a
	// frame does not allocate a closure.
	cur       parsed
	delivered int
	deliverFn func([]byte)
}

// New returns a Handler delivering to recv the frames addressed to
// <prefix>.<cluster>.<self>.
func New(prefix string, cluster, self uuid.UUID, recv bus.Receiver, c *counters.Counters, log *slog.Logger) *Handler {
	h := &Handler{
		prefix:   prefix,
		cluster:  cluster,
		self:     self,
		recv:     recv,
		counters: c,
		log:      log,
		subjects: make(map[string]parsed),
		warned:   make(map[bus.DropReason]*warnState),
	}
	h.deliverFn = h.deliverPayload
	return h
}

// Frame handles one inbound frame that arrived on subject. frame must not
// be reused by the caller: delivered payloads alias it.
func (h *Handler) Frame(subject string, frame []byte) {
	h.counters.ReceivedFrame(len(frame))
	p := h.parse(subject)
	if !p.ok {
		h.Dropped(uuid.Nil, bus.DropBadSubject, 1, subject)
		return
	}
	h.cur, h.delivered = p, 0
	if err := wire.DecodeFrame(frame, h.deliverFn); err != nil {
		h.Dropped(p.src, bus.DropBadFrame, 1, subject)
		return
	}
	h.counters.ReceivedPayloads(h.delivered)
}

func (h *Handler) deliverPayload(payload []byte) {
	h.delivered++
	h.recv.Deliver(bus.Delivery{
		Cluster: h.cluster,
		To:      h.self,
		From:    h.cur.src,
		Kind:    h.cur.kind,
		Data:    payload,
	})
}

// parse checks that subject is a raftbus subject addressed to this
// incarnation of this cluster. The subscription already guarantees the
// prefix, cluster and destination tokens as strings; parsing them again
// rejects non-canonical spellings and guards against a too-wide subscription.
func (h *Handler) parse(subject string) parsed {
	if p, ok := h.subjects[subject]; ok {
		return p
	}
	var p parsed
	cluster, dst, src, kind, err := wire.ParseSubject(h.prefix, subject)
	if err == nil && cluster == h.cluster && dst == h.self {
		p = parsed{src: src, kind: kind, ok: true}
	}
	if len(h.subjects) >= maxCachedSubjects {
		clear(h.subjects)
	}
	h.subjects[subject] = p
	return p
}

// Dropped counts n discarded payloads (or frames), tells the receiver and
// logs a rate-limited warning. subject may be empty.
func (h *Handler) Dropped(from uuid.UUID, reason bus.DropReason, n int, subject string) {
	if n <= 0 {
		return
	}
	h.counters.Drop(reason, n)
	h.recv.Dropped(from, reason, n)
	w := h.warned[reason]
	if w == nil {
		w = &warnState{}
		h.warned[reason] = w
	}
	now := time.Now()
	if now.Sub(w.last) < warnEvery {
		w.suppressed += n
		return
	}
	h.log.Warn("inbound traffic dropped", "reason", string(reason), "count", n+w.suppressed,
		"from", from, "subject", subject)
	w.last, w.suppressed = now, 0
}
