package natsbus

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

const waitTimeout = 20 * time.Second

func newBus(t *testing.T, cfg Config) *Bus {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func startedBus(t *testing.T, cfg Config, r bus.Receiver) *Bus {
	t.Helper()
	b := newBus(t, cfg)
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSurvivesServerRestartOnSamePort(t *testing.T) {
	opts := serverOptions(t)
	s1 := runServer(t, opts)
	port := s1.Addr().(*net.TCPAddr).Port
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := newBus(t, Config{Conn: connect(t, s1.ClientURL()), Cluster: cluster, Self: a})
	recv := bustest.NewCollector()
	busB := startedBus(t, Config{Conn: connect(t, s1.ClientURL()), Cluster: cluster, Self: b}, recv)

	if err := busA.Send(b, bus.KindMsg, []byte("before")); err != nil {
		t.Fatal(err)
	}
	bustest.WaitFor(t, waitTimeout, "delivery before restart", func() bool { return recv.Count() == 1 })

	s1.Shutdown()
	s1.WaitForShutdown()
	bustest.WaitFor(t, waitTimeout, "both buses disconnected", func() bool {
		return busA.State() == bus.StateDisconnected && busB.State() == bus.StateDisconnected
	})
	if err := busA.Send(b, bus.KindMsg, []byte("while down")); !errors.Is(err, bus.ErrNotConnected) {
		t.Fatalf("Send while disconnected: %v, want ErrNotConnected", err)
	}

	o2 := serverOptions(t)
	o2.Port = port
	runServer(t, o2)
	bustest.WaitFor(t, waitTimeout, "both buses reconnected", func() bool {
		return busA.State() == bus.StateConnected && busB.State() == bus.StateConnected
	})
	// The new server learns b's subscription from nats.go's resubscription;
	// keep sending until it is in place.
	bustest.WaitFor(t, waitTimeout, "delivery after restart", func() bool {
		if err := busA.Send(b, bus.KindMsg, []byte("after")); err != nil && !errors.Is(err, bus.ErrQueueFull) {
			t.Fatalf("Send after reconnect: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
		return recv.Count() >= 2
	})
	d := recv.Deliveries()[1]
	if string(d.Data) != "after" || d.From != a || d.To != b {
		t.Fatalf("unexpected delivery after restart: %+v", d)
	}
	for name, x := range map[string]*Bus{"a": busA, "b": busB} {
		s := x.Stats()
		if s.Reconnects < 1 {
			t.Errorf("bus %s counted %d reconnects", name, s.Reconnects)
		}
		if name == "a" && s.Dropped[bus.DropNotConnected] < 1 {
			t.Errorf("bus a did not count the refused Send: %v", s.Dropped)
		}
	}
}

// gate is a Receiver whose Deliver blocks until opened.
type gate struct {
	*bustest.Collector
	entered chan struct{}
	open    chan struct{}
}

func (g *gate) Deliver(d bus.Delivery) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.open
	g.Collector.Deliver(d)
}

func TestSlowConsumerDropsAreReported(t *testing.T) {
	s := runServer(t, serverOptions(t))
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	// 200-byte payloads in 256-byte frames: one payload per NATS message.
	busA := newBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: a, MaxFrameBytes: minFrameBytes})
	g := &gate{Collector: bustest.NewCollector(), entered: make(chan struct{}, 1), open: make(chan struct{})}
	opened := false
	defer func() {
		if !opened {
			close(g.open)
		}
	}()
	const limit, total = 8, 100
	busB := startedBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: b, PendingMsgsLimit: limit}, g)

	payload := make([]byte, 200)
	if err := busA.Send(b, bus.KindMsg, payload); err != nil {
		t.Fatal(err)
	}
	<-g.entered // delivery is stuck in the first Deliver
	for range total - 1 {
		if err := busA.Send(b, bus.KindMsg, payload); err != nil {
			t.Fatal(err)
		}
	}
	bustest.WaitFor(t, waitTimeout, "all frames reached b's client", func() bool {
		return busB.nc.Stats().InMsgs == total
	})
	close(g.open)
	opened = true
	bustest.WaitFor(t, waitTimeout, "every frame delivered or reported", func() bool {
		return g.Count()+g.DroppedCount(bus.DropSlowConsumer) == total
	})
	if g.DroppedCount(bus.DropSlowConsumer) == 0 {
		t.Fatal("no slow-consumer drops reported")
	}
	for _, d := range g.Drops() {
		if d.Reason == bus.DropSlowConsumer && d.From != uuid.Nil {
			t.Fatalf("slow-consumer drop attributed to %s", d.From)
		}
	}
	if got := busB.Stats().Dropped[bus.DropSlowConsumer]; int(got) != g.DroppedCount(bus.DropSlowConsumer) {
		t.Fatalf("stats count %d slow-consumer drops, receiver was told %d", got, g.DroppedCount(bus.DropSlowConsumer))
	}
}

func TestMetrics(t *testing.T) {
	s := runServer(t, serverOptions(t))
	reg := prometheus.NewRegistry()
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := newBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: a, Registerer: reg})
	recv := bustest.NewCollector()
	startedBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: b}, recv)

	for range 10 {
		if err := busA.Send(b, bus.KindMsg, []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	_ = busA.Send(b, bus.KindMsg, make([]byte, 2<<20)) // too large
	bustest.WaitFor(t, waitTimeout, "deliveries", func() bool { return recv.Count() == 10 })

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// value returns the metric's value; with reason set, that of the
	// dropped_total series carrying it.
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "raftbus_bus_") {
			t.Errorf("metric %s outside raftbus_bus_", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() != "reason" {
					t.Errorf("metric %s has label %s", mf.GetName(), l.GetName())
				}
				name += "{" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"raftbus_bus_payloads_sent_total":          10,
		"raftbus_bus_dropped_total{too_large}":     1,
		"raftbus_bus_dropped_total{slow_consumer}": 0,
		"raftbus_bus_connected":                    1,
		"raftbus_bus_queued_payloads":              0,
		"raftbus_bus_reconnects_total":             0,
		"raftbus_bus_payloads_received_total":      0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %t), want %v", name, v, ok, want)
		}
	}
	for _, name := range []string{"raftbus_bus_frames_sent_total", "raftbus_bus_bytes_sent_total",
		"raftbus_bus_frames_received_total", "raftbus_bus_bytes_received_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if got["raftbus_bus_frames_sent_total"] < 1 || got["raftbus_bus_frames_sent_total"] > 10 {
		t.Errorf("frames_sent_total = %v", got["raftbus_bus_frames_sent_total"])
	}

	// Close unregisters, so a successor bus can use the same registry.
	if err := busA.Close(); err != nil {
		t.Fatal(err)
	}
	newBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: uuid.New(), Registerer: reg})
}

func TestConfigValidation(t *testing.T) {
	o := serverOptions(t)
	o.MaxPayload = 64 << 10
	s := runServer(t, o)
	nc := connect(t, s.ClientURL())
	good := Config{Conn: nc, Cluster: uuid.New(), Self: uuid.New()}

	if _, err := New(Config{Cluster: uuid.New(), Self: uuid.New()}); !errors.Is(err, ErrNoConn) {
		t.Fatalf("New without Conn: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"nil cluster":           func(c *Config) { c.Cluster = uuid.Nil },
		"nil self":              func(c *Config) { c.Self = uuid.Nil },
		"bad prefix":            func(c *Config) { c.Prefix = "$SYS" },
		"frame above max":       func(c *Config) { c.MaxFrameBytes = 64<<10 + 1 },
		"tiny frames":           func(c *Config) { c.MaxFrameBytes = 10 },
		"unlimited pending":     func(c *Config) { c.PendingMsgsLimit = -1 },
		"unlimited pending mem": func(c *Config) { c.PendingBytesLimit = -1 },
		"queue below frame":     func(c *Config) { c.MaxQueueBytes = 1024 },
	} {
		c := good
		mutate(&c)
		if b, err := New(c); err == nil {
			_ = b.Close()
			t.Errorf("%s: New accepted the config", name)
		}
	}
	c := good
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if want := 64<<10 - FrameHeadroom; c.MaxFrameBytes != want {
		t.Fatalf("default MaxFrameBytes %d with max_payload 64 KiB, want %d", c.MaxFrameBytes, want)
	}
	if c.PendingMsgsLimit != DefaultPendingMsgsLimit || c.PendingBytesLimit != DefaultPendingBytesLimit || c.IdleSenderTimeout != DefaultIdleSenderTimeout {
		t.Fatalf("defaults not filled: %+v", c)
	}
}

func TestOwnerClosingConnection(t *testing.T) {
	s := runServer(t, serverOptions(t))
	nc := connect(t, s.ClientURL())
	b := startedBus(t, Config{Conn: nc, Cluster: uuid.New(), Self: uuid.New()}, bustest.NewCollector())
	other, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)

	// Close does not close a connection the bus does not own.
	b2 := newBus(t, Config{Conn: nc, Cluster: uuid.New(), Self: uuid.New()})
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatal("Close closed the connection")
	}

	nc.Close()
	bustest.WaitFor(t, waitTimeout, "state closed", func() bool { return b.State() == bus.StateClosed })
	if err := b.Send(uuid.New(), bus.KindMsg, []byte("x")); !errors.Is(err, bus.ErrNotConnected) {
		t.Fatalf("Send on a closed connection: %v, want ErrNotConnected", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	bustest.CheckNoBusGoroutines(t)
}

func TestIdleSenderRetires(t *testing.T) {
	s := runServer(t, serverOptions(t))
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := newBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: a, IdleSenderTimeout: 10 * time.Millisecond})
	recv := bustest.NewCollector()
	startedBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: b}, recv)
	for round := 1; round <= 2; round++ {
		if err := busA.Send(b, bus.KindMsg, []byte("x")); err != nil {
			t.Fatal(err)
		}
		bustest.WaitFor(t, waitTimeout, "delivery", func() bool { return recv.Count() == round })
		bustest.WaitFor(t, waitTimeout, "idle sender retired", func() bool {
			_, ok := busA.Stats().Queues[b]
			return !ok
		})
	}
}
