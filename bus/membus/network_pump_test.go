package membus

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
	"github.com/raftbus/raftbus/internal/wire"
)

func pumpCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// sendHeld sends one payload and waits until the network holds it as a
// frame of its own, so that frames are not coalesced.
func sendHeld(t *testing.T, n *Network, from *Bus, to uuid.UUID, i int) PendingFrame {
	t.Helper()
	before := len(n.Pending())
	if err := from.Send(to, bus.KindMsg, seqPayload(i)); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "frame held", func() bool { return len(n.Pending()) == before+1 })
	return n.Pending()[before]
}

func seqs(c *bustest.Collector) []uint32 {
	var out []uint32
	for _, d := range c.Deliveries() {
		out = append(out, seqOf(d.Data))
	}
	return out
}

func TestHoldDeliverReorderDuplicateDrop(t *testing.T) {
	n, a, b, _, rb := pair(t, 1, Config{})
	n.Hold()
	ctx := pumpCtx(t)
	var ids []uint64
	for i := range 4 {
		f := sendHeld(t, n, a, b.cfg.Self, i)
		if f.Src != a.cfg.Self || f.Dst != b.cfg.Self || f.Kind != bus.KindMsg || f.Payloads != 1 ||
			f.Size != wire.FrameOverhead-4+wire.FrameSize(4) || f.Subject != wire.Subject(bus.DefaultPrefix, a.cfg.Cluster, b.cfg.Self, a.cfg.Self, bus.KindMsg) {
			t.Fatalf("pending frame %d: %+v", i, f)
		}
		ids = append(ids, f.ID)
	}
	if rb.Count() != 0 {
		t.Fatalf("%d frames delivered while held", rb.Count())
	}
	if data, ok := n.PendingData(ids[0]); !ok || wire.DecodeFrame(data, func(p []byte) {
		if seqOf(p) != 0 {
			t.Errorf("frame 0 holds payload %d", seqOf(p))
		}
	}) != nil {
		t.Fatal("PendingData of a held frame")
	}

	// Reorder: 2 before 1. Deliver returns once the receiver has them.
	if got, err := n.Deliver(ctx, ids[2], ids[1], 999); err != nil || got != 2 {
		t.Fatalf("Deliver = %d, %v", got, err)
	}
	if got := seqs(rb); !slices.Equal(got, []uint32{2, 1}) {
		t.Fatalf("delivered %v, want [2 1]", got)
	}
	// Duplicate: delivered now and still held, for a replay later.
	if err := n.Duplicate(ctx, ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := n.Duplicate(ctx, ids[2]); err == nil {
		t.Fatal("Duplicate of a frame no longer held")
	}
	if got := n.Drop(func(f PendingFrame) bool { return f.ID == ids[0] }); got != 1 {
		t.Fatalf("Drop = %d", got)
	}
	if got := a.Stats().Dropped[bus.DropPartitioned]; got != 1 {
		t.Fatalf("dropped frames counted %d, want 1", got)
	}
	if got, err := n.DeliverAll(ctx); err != nil || got != 1 {
		t.Fatalf("DeliverAll = %d, %v", got, err)
	}
	if got := seqs(rb); !slices.Equal(got, []uint32{2, 1, 3, 3}) {
		t.Fatalf("delivered %v, want [2 1 3 3]", got)
	}
	if p := n.Pending(); len(p) != 0 {
		t.Fatalf("still pending: %+v", p)
	}
}

func TestHoldPerDestinationAndResume(t *testing.T) {
	n, a, b, ra, rb := pair(t, 1, Config{})
	n.Hold(b.cfg.Self)
	sendHeld(t, n, a, b.cfg.Self, 0)
	sendHeld(t, n, a, b.cfg.Self, 1)
	if err := b.Send(a.cfg.Self, bus.KindMsg, seqPayload(7)); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "unheld destination delivers", func() bool { return ra.Count() == 1 })
	if len(n.Pending()) != 2 {
		t.Fatalf("pending %+v", n.Pending())
	}
	n.Resume()
	if err := a.Send(b.cfg.Self, bus.KindMsg, seqPayload(2)); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "held frames and later ones delivered", func() bool { return rb.Count() == 3 })
	if got := seqs(rb); !slices.Equal(got, []uint32{0, 1, 2}) {
		t.Fatalf("delivered %v, want [0 1 2]", got)
	}
	if len(n.Pending()) != 0 {
		t.Fatal("frames held after Resume")
	}
}

func TestHoldBoundAndFaults(t *testing.T) {
	n, a, b, _, rb := pair(t, 1, Config{})
	n.Hold()
	n.SetHoldLimit(2, 0)
	sendHeld(t, n, a, b.cfg.Self, 0)
	sendHeld(t, n, a, b.cfg.Self, 1)
	if err := a.Send(b.cfg.Self, bus.KindMsg, seqPayload(2)); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "overflow counted", func() bool {
		return n.HoldOverflow() == 1 && a.Stats().Dropped[bus.DropPartitioned] == 1
	})
	// A partition drops before the hold: nothing is queued.
	n.SetHoldLimit(0, 0)
	n.Partition(a.cfg.Self, b.cfg.Self)
	if err := a.Send(b.cfg.Self, bus.KindMsg, seqPayload(3)); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "partition drop", func() bool { return a.Stats().Dropped[bus.DropPartitioned] == 2 })
	if len(n.Pending()) != 2 {
		t.Fatalf("pending %+v", n.Pending())
	}
	// Random faults do not touch held frames: every one is delivered once.
	n.Heal()
	n.SetDuplicateRate(1)
	n.SetReorderRate(1)
	n.SetDelay(time.Hour, time.Hour)
	sendHeld(t, n, a, b.cfg.Self, 4)
	if got, err := n.DeliverAll(pumpCtx(t)); err != nil || got != 3 {
		t.Fatalf("DeliverAll = %d, %v", got, err)
	}
	if got := seqs(rb); !slices.Equal(got, []uint32{0, 1, 4}) {
		t.Fatalf("delivered %v, want [0 1 4]", got)
	}
}

// Deliver must not wait forever for a receiver that went away.
func TestDeliverToClosedBus(t *testing.T) {
	n, a, b, _, _ := pair(t, 1, Config{})
	n.Hold()
	f := sendHeld(t, n, a, b.cfg.Self, 0)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := n.Deliver(pumpCtx(t), f.ID); err != nil || got != 1 {
		t.Fatalf("Deliver to a closed bus = %d, %v", got, err)
	}
}

// A receiver that blocks holds up Deliver only until its context ends.
func TestDeliverHonoursContext(t *testing.T) {
	n := NewNetwork(1)
	t.Cleanup(n.Close)
	cluster := uuid.New()
	a, err := n.NewBus(Config{Cluster: cluster, Self: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewBus(Config{Cluster: cluster, Self: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	if err := b.Start(&blockingReceiver{Collector: bustest.NewCollector(), entered: make(chan struct{}, 1), release: release}); err != nil {
		t.Fatal(err)
	}
	defer close(release)
	n.Hold()
	f := sendHeld(t, n, a, b.cfg.Self, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := n.Deliver(ctx, f.ID); err == nil {
		t.Fatal("Deliver returned while the receiver was blocked")
	}
}
