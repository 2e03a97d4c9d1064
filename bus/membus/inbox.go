package membus

import (
	"container/heap"
	"sync"
	"time"
)

// inFrame is a frame on its way into a bus.
type inFrame struct {
	subject string
	data    []byte    // owned by the inbox, then by the receiver
	at      time.Time // not delivered before this; zero means now
	seq     uint64    // arrival order, the tie-breaker
	// done, when set (a frame delivered by hand, network_pump.go), is
	// closed once the receiver has handled the frame or it was dropped.
	done chan struct{}
}

// inbox is the bounded inbound buffer of one bus, the in-memory analogue of
// a NATS subscription's pending buffer: publishers push, the bus's delivery
// goroutine takes. When it is full, frames are dropped and counted, and the
// delivery goroutine reports them as slow-consumer drops.
type inbox struct {
	maxFrames int
	maxBytes  int
	wake      chan struct{} // capacity 1
	stopped   chan struct{} // closed when the bus's delivery goroutine exits

	mu        sync.Mutex
	frames    frameHeap
	bytes     int
	seq       uint64
	held      *inFrame // picked for reordering, waiting to be overtaken
	heldUntil time.Time
	overflow  int // frames dropped because the inbox was full
}

func newInbox(maxFrames, maxBytes int) *inbox {
	return &inbox{maxFrames: maxFrames, maxBytes: maxBytes, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// push adds f. With reorder set, and no frame already held, f is held back
// until the next frame has been queued ahead of it.
func (in *inbox) push(f inFrame, reorder bool) {
	in.mu.Lock()
	if in.frames.Len()+1 > in.maxFrames || in.bytes+len(f.data) > in.maxBytes {
		in.overflow++
		in.mu.Unlock()
		if f.done != nil {
			close(f.done)
		}
		in.signal()
		return
	}
	in.seq++
	f.seq = in.seq
	in.bytes += len(f.data)
	if reorder && in.held == nil {
		in.held = &f
		in.heldUntil = time.Now().Add(reorderHold)
	} else {
		heap.Push(&in.frames, f)
		if in.held != nil {
			in.releaseHeld(f.at)
		}
	}
	in.mu.Unlock()
	in.signal()
}

// releaseHeld queues the held frame behind a frame due at notBefore.
// in.mu is held.
func (in *inbox) releaseHeld(notBefore time.Time) {
	h := *in.held
	in.held = nil
	in.seq++
	h.seq = in.seq
	if h.at.Before(notBefore) {
		h.at = notBefore
	}
	heap.Push(&in.frames, h)
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take moves up to max due frames into dst and returns them, the number of
// frames dropped on overflow since the last call, and when the next frame
// becomes due (zero if nothing waits).
func (in *inbox) take(now time.Time, dst []inFrame, max int) ([]inFrame, int, time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.held != nil && !now.Before(in.heldUntil) {
		in.releaseHeld(time.Time{})
	}
	for in.frames.Len() > 0 && len(dst) < max && !in.frames[0].at.After(now) {
		f := heap.Pop(&in.frames).(inFrame)
		in.bytes -= len(f.data)
		dst = append(dst, f)
	}
	overflow := in.overflow
	in.overflow = 0
	var next time.Time
	if in.frames.Len() > 0 {
		next = in.frames[0].at
	}
	if in.held != nil && (next.IsZero() || in.heldUntil.Before(next)) {
		next = in.heldUntil
	}
	return dst, overflow, next
}

// frameHeap orders frames by due time, then arrival.
type frameHeap []inFrame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(inFrame)) }
func (h *frameHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = inFrame{}
	*h = old[:len(old)-1]
	return f
}
