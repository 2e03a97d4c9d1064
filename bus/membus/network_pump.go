package membus

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
)

// Bounds of the manual-mode queue; see Network.Hold.
const (
	DefaultHoldFrames = 65536
	DefaultHoldBytes  = 256 << 20
)

// PendingFrame describes one frame held by the network in manual mode.
type PendingFrame struct {
	// ID names the frame for Deliver, Duplicate and Drop. IDs grow in the
	// order frames were published and are never reused by a network.
	ID       uint64
	Src, Dst uuid.UUID
	Kind     bus.Kind
	Subject  string
	Size     int // encoded frame bytes
	Payloads int // payloads coalesced into the frame
}

// heldFrame is a PendingFrame with its bytes and the bus that sent it (for
// drop accounting).
type heldFrame struct {
	PendingFrame
	data []byte
	from *Bus
}

// pump is the manual-mode state of a Network, guarded by Network.mu.
type pump struct {
	all       bool                   // hold every frame
	dsts      map[uuid.UUID]struct{} // else: hold frames to these
	frames    []heldFrame            // in publish order
	bytes     int
	nextID    uint64
	overflow  uint64
	maxFrames int
	maxBytes  int
}

func (p *pump) holds(dst uuid.UUID) bool {
	if p.all {
		return true
	}
	_, ok := p.dsts[dst]
	return ok
}

// Hold switches the network to manual delivery for frames addressed to
// dsts, or to every destination when dsts is empty; further calls add to
// the set. A held frame is queued by the network instead of delivered,
// until the test hands it over with Deliver, DeliverFunc or DeliverAll,
// copies it with Duplicate, discards it with Drop, or ends manual mode
// with Resume. Any order, any repetition and any loss is the test's
// choice: the network decides nothing about a held frame.
//
// Partitions, isolation and the drop rate still apply before a frame is
// held (a dropped frame is never held); the duplicate and reorder rates and
// the delay do not apply to held frames. The random draws are taken for
// every frame all the same, so a seed's decision sequence is unchanged.
//
// The queue is bounded by SetHoldLimit (default DefaultHoldFrames frames,
// DefaultHoldBytes bytes). A frame that would exceed it is lost: counted
// in the sender's Stats().Dropped[bus.DropPartitioned] and in
// HoldOverflow, so a test that floods a held network sees it.
func (n *Network) Hold(dsts ...uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(dsts) == 0 {
		n.pump.all = true
		return
	}
	if n.pump.dsts == nil {
		n.pump.dsts = make(map[uuid.UUID]struct{})
	}
	for _, d := range dsts {
		n.pump.dsts[d] = struct{}{}
	}
}

// SetHoldLimit bounds the manual-mode queue by frame count and bytes;
// values <= 0 restore the defaults. Frames already held are kept.
func (n *Network) SetHoldLimit(frames, bytes int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pump.maxFrames, n.pump.maxBytes = frames, bytes
}

// HoldOverflow returns how many frames were lost because the manual-mode
// queue was full.
func (n *Network) HoldOverflow() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pump.overflow
}

// hold queues a frame that passed the fault injector, if manual mode covers
// its destination. It reports whether the network took the frame (held, or
// lost to overflow: then lost is set). n.mu is held.
func (n *Network) hold(from *Bus, subject string, dst uuid.UUID, kind bus.Kind, payloads int, data []byte) (taken, lost bool) {
	p := &n.pump
	if !p.holds(dst) {
		return false, false
	}
	maxFrames, maxBytes := p.maxFrames, p.maxBytes
	if maxFrames <= 0 {
		maxFrames = DefaultHoldFrames
	}
	if maxBytes <= 0 {
		maxBytes = DefaultHoldBytes
	}
	if len(p.frames)+1 > maxFrames || p.bytes+len(data) > maxBytes {
		p.overflow++
		return true, true
	}
	p.nextID++
	p.frames = append(p.frames, heldFrame{
		PendingFrame: PendingFrame{
			ID: p.nextID, Src: from.cfg.Self, Dst: dst, Kind: kind, Subject: subject,
			Size: len(data), Payloads: payloads,
		},
		data: clone(data), // the sender reuses its frame buffer
		from: from,
	})
	p.bytes += len(data)
	return true, false
}

// Pending lists the held frames in publish order.
func (n *Network) Pending() []PendingFrame {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PendingFrame, len(n.pump.frames))
	for i := range n.pump.frames {
		out[i] = n.pump.frames[i].PendingFrame
	}
	return out
}

// PendingData returns a copy of held frame id's bytes (a bus frame, see
// wire.DecodeFrame), or false when no such frame is held.
func (n *Network) PendingData(id uint64) ([]byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i := n.pump.index(id); i >= 0 {
		return clone(n.pump.frames[i].data), true
	}
	return nil, false
}

func (p *pump) index(id uint64) int {
	return slices.IndexFunc(p.frames, func(f heldFrame) bool { return f.ID == id })
}

// take removes and returns the held frames that match, in publish order.
func (p *pump) take(match func(PendingFrame) bool) []heldFrame {
	var out []heldFrame
	kept := p.frames[:0]
	for _, f := range p.frames {
		if match(f.PendingFrame) {
			out = append(out, f)
			p.bytes -= len(f.data)
		} else {
			kept = append(kept, f)
		}
	}
	clear(p.frames[len(kept):])
	p.frames = kept
	return out
}

// Deliver hands the held frames ids to their destinations, in the order
// given (so a test reorders by listing them out of order), and removes
// them from the queue. IDs not held are skipped. It returns how many
// frames it delivered once every receiving bus's Receiver has returned
// from each of them (or that bus has closed), or ctx's error. Frames are
// routed when delivered, as NATS routes at publish: a frame whose
// destination has no subscription then is lost.
func (n *Network) Deliver(ctx context.Context, ids ...uint64) (int, error) {
	n.mu.Lock()
	picked := make([]heldFrame, 0, len(ids))
	for _, id := range ids {
		if i := n.pump.index(id); i >= 0 {
			f := n.pump.frames[i]
			n.pump.frames = slices.Delete(n.pump.frames, i, i+1)
			n.pump.bytes -= len(f.data)
			picked = append(picked, f)
		}
	}
	waits := n.pushHeld(picked)
	n.mu.Unlock()
	return len(picked), waitDelivered(ctx, waits)
}

// DeliverFunc is Deliver for every held frame that match accepts, in
// publish order. match is called with the network's mutex held and must
// not call the network.
func (n *Network) DeliverFunc(ctx context.Context, match func(PendingFrame) bool) (int, error) {
	n.mu.Lock()
	picked := n.pump.take(match)
	waits := n.pushHeld(picked)
	n.mu.Unlock()
	return len(picked), waitDelivered(ctx, waits)
}

// DeliverAll is Deliver for every held frame, in publish order.
func (n *Network) DeliverAll(ctx context.Context) (int, error) {
	return n.DeliverFunc(ctx, func(PendingFrame) bool { return true })
}

// Duplicate delivers a copy of held frame id, which stays held, as Deliver
// does: a test replays a captured frame by duplicating it now and
// delivering it later.
func (n *Network) Duplicate(ctx context.Context, id uint64) error {
	n.mu.Lock()
	i := n.pump.index(id)
	if i < 0 {
		n.mu.Unlock()
		return fmt.Errorf("membus: duplicate: frame %d is not held", id)
	}
	waits := n.pushHeld(n.pump.frames[i : i+1])
	n.mu.Unlock()
	return waitDelivered(ctx, waits)
}

// Drop discards the held frames that match, counting them as lost
// (bus.DropPartitioned) in their senders' Stats, and returns how many it
// discarded. match is called with the network's mutex held.
func (n *Network) Drop(match func(PendingFrame) bool) int {
	n.mu.Lock()
	picked := n.pump.take(match)
	n.mu.Unlock()
	for _, f := range picked {
		f.from.counters.Drop(bus.DropPartitioned, f.Payloads)
	}
	return len(picked)
}

// Resume ends manual mode: every held frame is handed to its destination
// in publish order, without waiting for the receivers, and frames flow
// again.
func (n *Network) Resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pump.all = false
	clear(n.pump.dsts)
	n.pushHeld(n.pump.take(func(PendingFrame) bool { return true }))
}

// delivery is what Deliver waits for: the receiver handled the frame, or
// its bus stopped delivering.
type delivery struct{ done, stopped <-chan struct{} }

// pushHeld routes frames and pushes them into the matching inboxes, in
// order. Pushing under n.mu keeps concurrent Deliver calls from
// interleaving one call's frames to a bus with another's. n.mu is held
// (lock order: network, then inbox).
func (n *Network) pushHeld(frames []heldFrame) []delivery {
	var waits []delivery
	for _, f := range frames {
		for _, in := range n.match(f.Subject) {
			done := make(chan struct{})
			in.push(inFrame{subject: f.Subject, data: clone(f.data), done: done}, false)
			waits = append(waits, delivery{done: done, stopped: in.stopped})
		}
	}
	return waits
}

func waitDelivered(ctx context.Context, waits []delivery) error {
	for _, w := range waits {
		select {
		case <-w.done:
		case <-w.stopped:
		case <-ctx.Done():
			return fmt.Errorf("membus: deliver: %w", ctx.Err())
		}
	}
	return nil
}
