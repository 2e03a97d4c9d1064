package outq

import (
	"time"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// sender is the state private to one destination's sender goroutine. Its
// buffers are reused from frame to frame so that steady-state sending does
// not allocate.
type sender struct {
	frame    []byte              // encoded frame, reused
	payloads [][]byte            // payloads of the frame being built, reused
	spare    []item              // the other half of the queue's double buffer
	subjects map[bus.Kind]string // subjects already built for this destination
	out      Frame
}

// run is the sender goroutine of q. It exits when the queues close or when
// it has been idle for IdleTimeout and could retire q.
func (qs *Queues) run(q *queue) {
	defer qs.wg.Done()
	s := &sender{subjects: make(map[bus.Kind]string, 2)}
	s.out.To = q.to

	var idle <-chan time.Time
	var timer *time.Timer
	if qs.cfg.IdleTimeout > 0 {
		timer = time.NewTimer(qs.cfg.IdleTimeout)
		defer timer.Stop()
		idle = timer.C
	}
	for {
		select {
		case <-qs.ctx.Done():
			return
		case <-q.wake:
			if !qs.drain(q, s) {
				return
			}
		case <-idle:
			if qs.retire(q) {
				return
			}
		}
		if timer != nil {
			// Since Go 1.23 Reset discards a stale expiry, so no draining.
			timer.Reset(qs.cfg.IdleTimeout)
		}
	}
}

// retire removes q from the map if nothing is queued. It reports whether
// the sender may exit. Holding qs.mu for writing excludes Enqueue, which
// would otherwise push onto a queue nobody drains.
func (qs *Queues) retire(q *queue) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.payloads > 0 || len(q.items) > 0 {
		return false
	}
	if qs.dests[q.to] == q {
		delete(qs.dests, q.to)
	}
	return true
}

// drain publishes everything queued for q, taking the whole queue at once
// (a buffer swap) so Enqueue callers contend only for that moment. It
// returns false when the queues were closed meanwhile.
func (qs *Queues) drain(q *queue, s *sender) bool {
	for {
		q.mu.Lock()
		batch := q.items
		q.items = s.spare[:0]
		q.mu.Unlock()
		if len(batch) == 0 {
			s.spare = batch
			return true
		}
		ok := qs.sendBatch(q, s, batch)
		clear(batch) // drop references so published payloads can be collected
		s.spare = batch[:0]
		if !ok {
			return false
		}
	}
}

// sendBatch cuts batch into frames of consecutive same-kind payloads of at
// most MaxFrameBytes and publishes them in order.
func (qs *Queues) sendBatch(q *queue, s *sender, batch []item) bool {
	for i := 0; i < len(batch); {
		if qs.ctx.Err() != nil {
			return false
		}
		kind := batch[i].kind
		size, bytes := wire.FrameOverhead, 0
		s.payloads = s.payloads[:0]
		j := i
		for ; j < len(batch) && batch[j].kind == kind; j++ {
			n := wire.FrameSize(len(batch[j].data))
			if len(s.payloads) > 0 && size+n > qs.cfg.MaxFrameBytes {
				break
			}
			size += n
			bytes += len(batch[j].data)
			s.payloads = append(s.payloads, batch[j].data)
		}
		s.frame = wire.AppendFrame(s.frame[:0], s.payloads)
		clear(s.payloads)
		s.out.Kind = kind
		s.out.Subject = s.subject(qs, q, kind)
		s.out.Data = s.frame
		s.out.Payloads = j - i
		qs.cfg.Publish(qs.ctx, &s.out)
		s.out.Data = nil

		q.mu.Lock()
		q.payloads -= j - i
		q.bytes -= bytes
		q.mu.Unlock()
		qs.queued.Add(-int64(j - i))
		i = j
	}
	return true
}

func (s *sender) subject(qs *Queues, q *queue, kind bus.Kind) string {
	subj, ok := s.subjects[kind]
	if !ok {
		subj = qs.cfg.Subject(q.to, kind)
		s.subjects[kind] = subj
	}
	return subj
}
