package membus

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

// oneFramePerPayload makes every frame hold exactly one 200-byte payload,
// so fault rates apply per payload.
var oneFramePerPayload = Config{MaxFrameBytes: minFrameBytes}

const faultPayloads = 2000

func sendNumbered(t *testing.T, from *Bus, to uuid.UUID, n int) {
	t.Helper()
	for i := range n {
		p := make([]byte, 200)
		copy(p, seqPayload(i))
		for {
			err := from.Send(to, bus.KindMsg, p)
			if err == nil {
				break
			}
			if !errors.Is(err, bus.ErrQueueFull) {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

func within(t *testing.T, what string, got, lo, hi float64) {
	t.Helper()
	if got < lo || got > hi {
		t.Fatalf("%s = %.3f, want within [%.2f, %.2f]", what, got, lo, hi)
	}
}

func TestDropRate(t *testing.T) {
	n, a, b, _, rb := pair(t, 7, oneFramePerPayload)
	n.SetDropRate(0.3)
	sendNumbered(t, a, b.cfg.Self, faultPayloads)
	bustest.WaitFor(t, waitTimeout, "every frame delivered or dropped", func() bool {
		return rb.Count()+int(a.Stats().Dropped[bus.DropPartitioned]) == faultPayloads
	})
	within(t, "delivered fraction", float64(rb.Count())/faultPayloads, 0.6, 0.8)
}

func TestDuplicateRate(t *testing.T) {
	n, a, b, _, rb := pair(t, 7, oneFramePerPayload)
	n.SetDuplicateRate(0.2)
	sendNumbered(t, a, b.cfg.Self, faultPayloads)
	bustest.WaitFor(t, waitTimeout, "all published", func() bool { return a.Stats().SentPayloads == faultPayloads })
	seen := map[uint32]int{}
	bustest.WaitFor(t, waitTimeout, "every payload delivered", func() bool {
		clear(seen)
		for _, d := range rb.Deliveries() {
			seen[seqOf(d.Data)]++
		}
		return len(seen) == faultPayloads
	})
	within(t, "duplicated fraction", float64(rb.Count()-faultPayloads)/faultPayloads, 0.15, 0.25)
}

func TestReorderRate(t *testing.T) {
	n, a, b, _, rb := pair(t, 7, oneFramePerPayload)
	n.SetReorderRate(0.2)
	sendNumbered(t, a, b.cfg.Self, faultPayloads)
	// Reordering loses nothing: a held frame is overtaken or released.
	bustest.WaitFor(t, waitTimeout, "every payload delivered", func() bool { return rb.Count() == faultPayloads })
	late, highest := 0, -1
	for _, d := range rb.Deliveries() {
		if s := int(seqOf(d.Data)); s < highest {
			late++
		} else {
			highest = s
		}
	}
	// A frame is held when picked and nothing is held yet: about p(1-p)
	// of the frames, here 0.16.
	within(t, "late fraction", float64(late)/faultPayloads, 0.1, 0.25)
}

func TestDelayDeliversEverything(t *testing.T) {
	n, a, b, _, rb := pair(t, 7, oneFramePerPayload)
	n.SetDelay(100*time.Microsecond, 2*time.Millisecond)
	sendNumbered(t, a, b.cfg.Self, 200)
	bustest.WaitFor(t, waitTimeout, "every payload delivered", func() bool { return rb.Count() == 200 })
}

func TestPartitionIsolateHeal(t *testing.T) {
	n := NewNetwork(1)
	t.Cleanup(n.Close)
	cluster := uuid.New()
	buses := make([]*Bus, 3)
	recv := make([]*bustest.Collector, 3)
	for i := range buses {
		b, err := n.NewBus(Config{Cluster: cluster, Self: uuid.New()})
		if err != nil {
			t.Fatal(err)
		}
		recv[i] = bustest.NewCollector()
		if err := b.Start(recv[i]); err != nil {
			t.Fatal(err)
		}
		buses[i] = b
	}
	id := func(i int) uuid.UUID { return buses[i].cfg.Self }
	// exchange sends one payload on every ordered pair and waits until each
	// was delivered or dropped by a fault; it returns who got what.
	exchange := func() [3][3]bool {
		before := make([]int, 3)
		var dropped uint64
		for i := range buses {
			before[i] = recv[i].Count()
			dropped += buses[i].Stats().Dropped[bus.DropPartitioned]
		}
		for i := range buses {
			for j := range buses {
				if i != j {
					if err := buses[i].Send(id(j), bus.KindMsg, []byte{byte(i)}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		bustest.WaitFor(t, waitTimeout, "exchange settled", func() bool {
			total := uint64(0)
			for i := range buses {
				total += uint64(recv[i].Count()-before[i]) + buses[i].Stats().Dropped[bus.DropPartitioned]
			}
			return total-dropped == 6
		})
		var got [3][3]bool
		for j := range buses {
			for _, d := range recv[j].Deliveries()[before[j]:] {
				got[d.Data[0]][j] = true
			}
		}
		return got
	}
	all := [3][3]bool{{false, true, true}, {true, false, true}, {true, true, false}}
	if got := exchange(); got != all {
		t.Fatalf("healthy network: %v", got)
	}
	n.Partition(id(0), id(1))
	if got, want := exchange(), ([3][3]bool{{false, false, true}, {false, false, true}, {true, true, false}}); got != want {
		t.Fatalf("partition 0|1: got %v, want %v", got, want)
	}
	n.Heal()
	n.Isolate(id(2))
	if got, want := exchange(), ([3][3]bool{{false, true, false}, {true, false, false}, {false, false, false}}); got != want {
		t.Fatalf("isolate 2: got %v, want %v", got, want)
	}
	n.Heal()
	if got := exchange(); got != all {
		t.Fatalf("healed network: %v", got)
	}
}

// blockingReceiver blocks Deliver until release is closed.
type blockingReceiver struct {
	*bustest.Collector
	entered chan struct{}
	release chan struct{}
}

func (r *blockingReceiver) Deliver(d bus.Delivery) {
	select {
	case r.entered <- struct{}{}:
	default:
	}
	<-r.release
	r.Collector.Deliver(d)
}

func TestInboundOverflowIsReported(t *testing.T) {
	n := NewNetwork(1)
	t.Cleanup(n.Close)
	cluster := uuid.New()
	a, err := n.NewBus(Config{Cluster: cluster, Self: uuid.New(), MaxFrameBytes: minFrameBytes})
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewBus(Config{Cluster: cluster, Self: uuid.New(), PendingMsgsLimit: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := &blockingReceiver{Collector: bustest.NewCollector(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	const total = 50
	sendNumbered(t, a, b.cfg.Self, 1)
	<-r.entered // the delivery goroutine is stuck in the first Deliver
	sendNumbered(t, a, b.cfg.Self, total-1)
	bustest.WaitFor(t, waitTimeout, "all published", func() bool { return a.Stats().SentPayloads == total })
	close(r.release)
	bustest.WaitFor(t, waitTimeout, "delivered plus dropped adds up", func() bool {
		return r.Count()+r.DroppedCount(bus.DropSlowConsumer) == total
	})
	if got := r.DroppedCount(bus.DropSlowConsumer); got != total-1-4 {
		t.Fatalf("slow-consumer drops %d, want %d", got, total-1-4)
	}
	if got := b.Stats().Dropped[bus.DropSlowConsumer]; got != total-1-4 {
		t.Fatalf("Stats slow-consumer drops %d", got)
	}
}

func TestIdleSenderRetires(t *testing.T) {
	_, a, b, _, rb := pair(t, 1, Config{IdleSenderTimeout: 10 * time.Millisecond})
	for round := 1; round <= 2; round++ {
		if err := a.Send(b.cfg.Self, bus.KindMsg, []byte("x")); err != nil {
			t.Fatal(err)
		}
		bustest.WaitFor(t, waitTimeout, "delivery", func() bool { return rb.Count() == round })
		bustest.WaitFor(t, waitTimeout, "idle sender retired", func() bool {
			_, ok := a.Stats().Queues[b.cfg.Self]
			return !ok
		})
	}
}

func TestConfigValidation(t *testing.T) {
	n := NewNetwork(1)
	t.Cleanup(n.Close)
	good := Config{Cluster: uuid.New(), Self: uuid.New()}
	for name, mutate := range map[string]func(*Config){
		"nil cluster":        func(c *Config) { c.Cluster = uuid.Nil },
		"nil self":           func(c *Config) { c.Self = uuid.Nil },
		"bad prefix":         func(c *Config) { c.Prefix = "a.*" },
		"tiny frames":        func(c *Config) { c.MaxFrameBytes = 16 },
		"queue below frame":  func(c *Config) { c.MaxFrameBytes, c.MaxQueueBytes = 4096, 1024 },
		"negative limit":     func(c *Config) { c.PendingMsgsLimit = -1 },
		"negative idle time": func(c *Config) { c.IdleSenderTimeout = -time.Second },
	} {
		c := good
		mutate(&c)
		if _, err := n.NewBus(c); err == nil {
			t.Errorf("%s: NewBus accepted %+v", name, c)
		}
	}
	n.Close()
	if _, err := n.NewBus(good); !errors.Is(err, ErrNetworkClosed) {
		t.Fatalf("NewBus on a closed network: %v", err)
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b.>", "a.b.c", true},
		{"a.b.>", "a.b.c.d", true},
		{"a.b.>", "a.b", false},
		{"a.b.>", "a.bc.d", false},
		{"a.*.c", "a.x.c", true},
		{"a.*.c", "a.x.d", false},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"a.b.>", "a.b.", false},
		{"a.b.>", "a.b..c", false},
	} {
		if got := subjectMatches(splitPattern(tc.pattern), tc.subject); got != tc.want {
			t.Errorf("%q matches %q = %t, want %t", tc.pattern, tc.subject, got, tc.want)
		}
	}
}
