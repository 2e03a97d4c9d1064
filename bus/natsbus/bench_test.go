package natsbus

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Raft-sized payloads: a heartbeat or vote, a small append, a large append.
var benchSizes = []int{128, 1 << 10, 16 << 10}

// BenchmarkThroughput compares, for each payload size, the bus carrying
// b.N payloads from one incarnation to another with raw nats.go
// Publish/Subscribe of the same bytes, on the same embedded server over
// loopback TCP, with separate connections for sender and receiver. The
// clock runs until the last payload has been received. Compare the msgs/s
// metrics of bus and raw side by side: runs drift minutes apart.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d/bus", size), func(b *testing.B) { benchBus(b, size) })
		b.Run(fmt.Sprintf("size=%d/raw", size), func(b *testing.B) { benchRaw(b, size) })
	}
}

// countingReceiver counts deliveries and drops and signals when their sum
// reaches target.
type countingReceiver struct {
	target    int64
	delivered atomic.Int64
	dropped   atomic.Int64
	done      chan struct{}
}

func (r *countingReceiver) check() {
	if r.delivered.Load()+r.dropped.Load() == r.target {
		close(r.done)
	}
}

func (r *countingReceiver) Deliver(bus.Delivery) {
	r.delivered.Add(1)
	r.check()
}

func (r *countingReceiver) Dropped(_ uuid.UUID, _ bus.DropReason, n int) {
	r.dropped.Add(int64(n))
	r.check()
}

func report(b *testing.B, received int64, size int, elapsed time.Duration) {
	b.ReportMetric(float64(received)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(received)*float64(size)/elapsed.Seconds()/1e6, "MB/s")
}

func waitDone(b *testing.B, done <-chan struct{}, what func() string) {
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("not everything arrived: %s", what())
	}
}

func benchBus(b *testing.B, size int) {
	s := runServer(b, serverOptions(b))
	cluster, src, dst := uuid.New(), uuid.New(), uuid.New()
	sender := newBenchBus(b, Config{Conn: connect(b, s.ClientURL()), Cluster: cluster, Self: src})
	recv := &countingReceiver{target: int64(b.N), done: make(chan struct{})}
	receiver := newBenchBus(b, Config{Conn: connect(b, s.ClientURL()), Cluster: cluster, Self: dst})
	if err := receiver.Start(recv); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for {
			err := sender.Send(dst, bus.KindMsg, payload)
			if err == nil {
				break
			}
			if !errors.Is(err, bus.ErrQueueFull) {
				b.Fatal(err)
			}
			// A Raft node would drop here; the benchmark wants every
			// payload through. The queue holds milliseconds of work, so a
			// short sleep keeps the pipeline busy without burning a core
			// that the sender, the server and the receiver need.
			time.Sleep(20 * time.Microsecond)
		}
	}
	waitDone(b, recv.done, func() string {
		return fmt.Sprintf("delivered %d dropped %d of %d; sender %+v", recv.delivered.Load(), recv.dropped.Load(), b.N, sender.Stats())
	})
	elapsed := time.Since(start)
	b.StopTimer()

	report(b, recv.delivered.Load(), size, elapsed)
	st := sender.Stats()
	b.ReportMetric(float64(st.SentPayloads)/float64(max(st.SentFrames, 1)), "payloads/frame")
	if d := recv.dropped.Load(); d > 0 {
		b.ReportMetric(float64(d), "dropped")
	}
}

func newBenchBus(b *testing.B, cfg Config) *Bus {
	x, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = x.Close() })
	return x
}

func benchRaw(b *testing.B, size int) {
	s := runServer(b, serverOptions(b))
	pub := connect(b, s.ClientURL())
	subConn := connect(b, s.ClientURL())
	subject := wire.Subject(bus.DefaultPrefix, uuid.New(), uuid.New(), uuid.New(), bus.KindMsg)
	var received atomic.Int64
	done := make(chan struct{})
	sub, err := subConn.Subscribe(subject, func(*nats.Msg) {
		if received.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	// Large explicit limits: the baseline must not lose messages, and core
	// NATS gives the publisher no backpressure.
	if err := sub.SetPendingLimits(b.N+1, 8<<30); err != nil {
		b.Fatal(err)
	}
	if err := subConn.Flush(); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		b.Fatal(err)
	}
	waitDone(b, done, func() string {
		dropped, _ := sub.Dropped()
		return fmt.Sprintf("received %d of %d, %d dropped", received.Load(), b.N, dropped)
	})
	elapsed := time.Since(start)
	b.StopTimer()
	report(b, received.Load(), size, elapsed)
}

// BenchmarkPingPong measures the round trip of one payload A -> B -> A,
// B answering from its receive path, with one payload in flight: the
// latency Raft sees at one client. "queued" is the default bus (Send hands
// the payload to the destination's sender goroutine), "inline" is
// Config.InlinePublish, "raw" is nats.go publish from a subscription
// callback.
func BenchmarkPingPong(b *testing.B) {
	for _, size := range []int{128, 16 << 10} {
		b.Run(fmt.Sprintf("size=%d/queued", size), func(b *testing.B) { benchPingPong(b, size, false) })
		b.Run(fmt.Sprintf("size=%d/inline", size), func(b *testing.B) { benchPingPong(b, size, true) })
		b.Run(fmt.Sprintf("size=%d/raw", size), func(b *testing.B) { benchPingPongRaw(b, size) })
	}
}

// echoReceiver sends every delivery back to its sender on its bus.
type echoReceiver struct{ b *Bus }

func (r *echoReceiver) Deliver(d bus.Delivery)                 { _ = r.b.Send(d.From, d.Kind, d.Data) }
func (r *echoReceiver) Dropped(uuid.UUID, bus.DropReason, int) {}

// signalReceiver signals every delivery.
type signalReceiver chan struct{}

func (r signalReceiver) Deliver(bus.Delivery)                   { r <- struct{}{} }
func (r signalReceiver) Dropped(uuid.UUID, bus.DropReason, int) {}

func benchPingPong(b *testing.B, size int, inline bool) {
	s := runServer(b, serverOptions(b))
	cluster, ida, idb := uuid.New(), uuid.New(), uuid.New()
	x := newBenchBus(b, Config{Conn: connect(b, s.ClientURL(), ConnTuning{}.Options()...), Cluster: cluster, Self: ida, InlinePublish: inline})
	y := newBenchBus(b, Config{Conn: connect(b, s.ClientURL(), ConnTuning{}.Options()...), Cluster: cluster, Self: idb, InlinePublish: inline})
	back := make(signalReceiver, 1)
	if err := x.Start(back); err != nil {
		b.Fatal(err)
	}
	if err := y.Start(&echoReceiver{y}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	roundTrip := func() {
		if err := x.Send(idb, bus.KindMsg, payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-back:
		case <-time.After(10 * time.Second):
			b.Fatalf("no answer; %+v", x.Stats())
		}
	}
	measureRoundTrips(b, roundTrip)
	b.ReportMetric(float64(x.inlined.Load()+y.inlined.Load())/float64(2*(b.N+1)), "inline/send")
}

// processCPU is the CPU time (user and system) of the whole process: both
// buses, nats.go and the embedded server. Per round trip it is steadier
// than the wall clock on a shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchPingPongRaw(b *testing.B, size int) {
	s := runServer(b, serverOptions(b))
	ca, cb := connect(b, s.ClientURL()), connect(b, s.ClientURL())
	ping := wire.Subject(bus.DefaultPrefix, uuid.New(), uuid.New(), uuid.New(), bus.KindMsg)
	pong := wire.Subject(bus.DefaultPrefix, uuid.New(), uuid.New(), uuid.New(), bus.KindMsg)
	back := make(chan struct{}, 1)
	if _, err := ca.Subscribe(pong, func(*nats.Msg) { back <- struct{}{} }); err != nil {
		b.Fatal(err)
	}
	if _, err := cb.Subscribe(ping, func(m *nats.Msg) { _ = cb.Publish(pong, m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := ca.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := cb.Flush(); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	roundTrip := func() {
		if err := ca.Publish(ping, payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-back:
		case <-time.After(10 * time.Second):
			b.Fatal("no answer")
		}
	}
	measureRoundTrips(b, roundTrip)
}

// measureRoundTrips warms up with one round trip, then times b.N of them
// and reports the process CPU per round trip.
func measureRoundTrips(b *testing.B, roundTrip func()) {
	roundTrip()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		roundTrip()
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}
