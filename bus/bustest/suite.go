package bustest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// Run runs the conformance suite. newEnv is called once per subtest, with
// the subtest's t, and must give an isolated network.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	tests := []struct {
		name string
		fn   func(t *testing.T, env Env)
	}{
		{"DeliveryAndIdentities", testDelivery},
		{"OrderPerSourceAndKind", testOrder},
		{"Coalescing", testCoalescing},
		{"BoundedNonBlockingSend", testBoundedSend},
		{"TooLarge", testTooLarge},
		{"IncarnationAndClusterIsolation", testIsolation},
		{"BadFramesAndSubjects", testBadInput},
		{"CloseAndStart", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newEnv(t))
		})
	}
	// Every subtest's buses are closed by its cleanups by now.
	t.Run("NoGoroutineLeaks", func(t *testing.T) { CheckNoBusGoroutines(t) })
}

// started builds and starts a bus with a fresh Collector.
func started(t *testing.T, env Env, cfg BusConfig) (bus.Bus, *Collector) {
	t.Helper()
	b := env.NewBus(t, cfg)
	c := NewCollector()
	if err := b.Start(c); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return b, c
}

// seqPayload is payload i of a numbered stream, padded to size bytes.
func seqPayload(i, size int) []byte {
	p := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(p, uint32(i))
	return p
}

func seqOf(p []byte) int { return int(binary.BigEndian.Uint32(p)) }

func testDelivery(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA, recvA := started(t, env, BusConfig{Cluster: cluster, Self: a})
	busB, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})

	sendAll(t, busA, b, bus.KindMsg, []byte("ping"))
	sendAll(t, busB, a, bus.KindSnap, []byte("pong"))
	WaitFor(t, waitTimeout, "one delivery each way", func() bool { return recvA.Count() == 1 && recvB.Count() == 1 })

	check := func(got bus.Delivery, from, to uuid.UUID, kind bus.Kind, data string) {
		t.Helper()
		if got.Cluster != cluster || got.From != from || got.To != to || got.Kind != kind || string(got.Data) != data {
			t.Fatalf("delivery %+v, want cluster %s from %s to %s kind %s data %q", got, cluster, from, to, kind, data)
		}
	}
	check(recvB.Deliveries()[0], a, b, bus.KindMsg, "ping")
	check(recvA.Deliveries()[0], b, a, bus.KindSnap, "pong")

	// An empty payload is a payload too.
	sendAll(t, busA, b, bus.KindMsg, []byte{})
	WaitFor(t, waitTimeout, "empty payload", func() bool { return recvB.Count() == 2 })
	check(recvB.Deliveries()[1], a, b, bus.KindMsg, "")

	if s := busA.Stats(); s.SentPayloads != 2 || s.ReceivedPayloads != 1 {
		t.Fatalf("stats of a: sent %d, received %d payloads; want 2 and 1", s.SentPayloads, s.ReceivedPayloads)
	}
	if st := busA.State(); st != bus.StateConnected {
		t.Fatalf("State() = %s, want connected", st)
	}
}

func testOrder(t *testing.T, env Env) {
	cluster, dst := uuid.New(), uuid.New()
	_, recv := started(t, env, BusConfig{Cluster: cluster, Self: dst})
	const perKind = 1500
	senders := []uuid.UUID{uuid.New(), uuid.New()}
	kinds := []bus.Kind{bus.KindMsg, bus.KindSnap}
	var wg sync.WaitGroup
	for _, src := range senders {
		b := env.NewBus(t, BusConfig{Cluster: cluster, Self: src})
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Interleave the kinds so that frames switch kind often.
			for i := range perKind {
				for _, k := range kinds {
					if err := trySendAll(b, dst, k, seqPayload(i, 1+i%300)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := perKind * len(senders) * len(kinds)
	WaitFor(t, waitTimeout, fmt.Sprintf("%d deliveries", want), func() bool { return recv.Count() >= want })

	type stream struct {
		from uuid.UUID
		kind bus.Kind
	}
	next := map[stream]int{}
	for _, d := range recv.Deliveries() {
		s := stream{d.From, d.Kind}
		if got := seqOf(d.Data); got != next[s] {
			t.Fatalf("stream %s/%s: got payload %d, want %d", d.From, d.Kind, got, next[s])
		}
		if len(d.Data) != max(1+next[s]%300, 4) {
			t.Fatalf("stream %s/%s payload %d has %d bytes", d.From, d.Kind, next[s], len(d.Data))
		}
		next[s]++
	}
	for _, src := range senders {
		for _, k := range kinds {
			if n := next[stream{src, k}]; n != perKind {
				t.Fatalf("stream %s/%s delivered %d payloads, want %d", src, k, n, perKind)
			}
		}
	}
}

func testCoalescing(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	const maxFrame = 1024
	busA := env.NewBus(t, BusConfig{Cluster: cluster, Self: a, MaxFrameBytes: maxFrame})
	busB, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})

	const n, size = 5000, 100
	for i := range n {
		sendAll(t, busA, b, bus.KindMsg, seqPayload(i, size))
	}
	WaitFor(t, waitTimeout, "all delivered", func() bool { return recvB.Count() == n })
	for i, d := range recvB.Deliveries() {
		if seqOf(d.Data) != i || len(d.Data) != size {
			t.Fatalf("delivery %d: payload %d of %d bytes", i, seqOf(d.Data), len(d.Data))
		}
	}
	sa, sb := busA.Stats(), busB.Stats()
	if sa.SentPayloads != n || sb.ReceivedPayloads != n {
		t.Fatalf("sent %d, received %d payloads; want %d", sa.SentPayloads, sb.ReceivedPayloads, n)
	}
	if sa.SentFrames >= n {
		t.Fatalf("%d payloads went out in %d frames: no coalescing", n, sa.SentFrames)
	}
	if sa.SentBytes > sa.SentFrames*maxFrame {
		t.Fatalf("%d frames carried %d bytes: some exceeded MaxFrameBytes %d", sa.SentFrames, sa.SentBytes, maxFrame)
	}
	if sb.ReceivedFrames != sa.SentFrames || sb.ReceivedBytes != sa.SentBytes {
		t.Fatalf("received %d frames / %d bytes, sent %d / %d", sb.ReceivedFrames, sb.ReceivedBytes, sa.SentFrames, sa.SentBytes)
	}
	t.Logf("%d payloads in %d frames", n, sa.SentFrames)
}

func testBoundedSend(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	const maxPayloads, maxBytes, size = 64, 64 << 10, 2 << 10
	busA := env.NewBus(t, BusConfig{Cluster: cluster, Self: a,
		MaxQueuePayloads: maxPayloads, MaxQueueBytes: maxBytes, MaxFrameBytes: 16 << 10})
	_, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})

	env.Stall(t, a, b)
	stalled := true
	defer func() {
		if stalled {
			env.Unstall(t, a, b)
		}
	}()

	// Send until the queue has refused many payloads in a row: by then the
	// network has stopped taking frames (socket buffers, if any, are full).
	accepted, refusedInARow := 0, 0
	deadline := time.Now().Add(waitTimeout)
	for refusedInARow < 200 {
		err := busA.Send(b, bus.KindMsg, seqPayload(accepted, size))
		switch {
		case err == nil:
			accepted++
			refusedInARow = 0
		case errors.Is(err, bus.ErrQueueFull):
			refusedInARow++
			time.Sleep(50 * time.Microsecond) // let a sender that still can drain
		default:
			t.Fatalf("Send: %v", err)
		}
		q := busA.Stats().Queues[b]
		if q.Payloads > maxPayloads || q.Bytes > maxBytes {
			t.Fatalf("queue holds %d payloads / %d bytes, bounds are %d / %d", q.Payloads, q.Bytes, maxPayloads, maxBytes)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled queue never filled (%d accepted)", accepted)
		}
	}
	s := busA.Stats()
	if s.Dropped[bus.DropQueueFull] < 200 {
		t.Fatalf("Dropped[queue_full] = %d, want >= 200", s.Dropped[bus.DropQueueFull])
	}
	t.Logf("accepted %d payloads of %d bytes before the queue stayed full; queue %+v", accepted, size, s.Queues[b])

	// Nothing accepted is lost: once the path flows again, all arrive in order.
	env.Unstall(t, a, b)
	stalled = false
	WaitFor(t, waitTimeout, fmt.Sprintf("%d accepted payloads delivered", accepted), func() bool { return recvB.Count() == accepted })
	for i, d := range recvB.Deliveries() {
		if seqOf(d.Data) != i {
			t.Fatalf("delivery %d carries payload %d", i, seqOf(d.Data))
		}
	}
	WaitFor(t, waitTimeout, "queue drained", func() bool { return busA.Stats().Queues[b].Payloads == 0 })
}

func testTooLarge(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	const maxFrame = 4096
	busA := env.NewBus(t, BusConfig{Cluster: cluster, Self: a, MaxFrameBytes: maxFrame})
	_, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})

	if err := busA.Send(b, bus.KindMsg, make([]byte, maxFrame)); !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("Send of a %d-byte payload with MaxFrameBytes %d: %v, want ErrTooLarge", maxFrame, maxFrame, err)
	}
	if got := busA.Stats().Dropped[bus.DropTooLarge]; got != 1 {
		t.Fatalf("Dropped[too_large] = %d, want 1", got)
	}
	// A payload that fits a frame with the header's worst case goes through.
	fits := maxFrame - wire.FrameOverhead - 2
	sendAll(t, busA, b, bus.KindMsg, bytes.Repeat([]byte{7}, fits))
	WaitFor(t, waitTimeout, "fitting payload delivered", func() bool { return recvB.Count() == 1 })
	if got := len(recvB.Deliveries()[0].Data); got != fits {
		t.Fatalf("delivered %d bytes, want %d", got, fits)
	}
}

func testIsolation(t *testing.T, env Env) {
	c1, c2 := uuid.New(), uuid.New()
	oldInc, newInc := uuid.New(), uuid.New() // a removed incarnation and its replacement
	_, recvNew := started(t, env, BusConfig{Cluster: c1, Self: newInc})
	_, recvOther := started(t, env, BusConfig{Cluster: c2, Self: oldInc}) // same UUID, other cluster
	s1, _ := started(t, env, BusConfig{Cluster: c1, Self: uuid.New()})
	s2, _ := started(t, env, BusConfig{Cluster: c2, Self: uuid.New()})

	drained := func(b bus.Bus, to uuid.UUID) func() bool {
		return func() bool { return b.Stats().Queues[to].Payloads == 0 }
	}
	// Traffic for the removed incarnation in c1 reaches nobody: not its
	// replacement in c1, not the holder of the same UUID in c2.
	sendAll(t, s1, oldInc, bus.KindMsg, []byte("for the removed incarnation"))
	WaitFor(t, waitTimeout, "s1 queue drained", drained(s1, oldInc))
	// Traffic for newInc in c2 does not reach newInc in c1.
	sendAll(t, s2, newInc, bus.KindMsg, []byte("for newInc in another cluster"))
	WaitFor(t, waitTimeout, "s2 queue drained", drained(s2, newInc))

	// Markers published after the misaddressed frames, on the same
	// connections, so anything misrouted would have arrived before them.
	sendAll(t, s2, oldInc, bus.KindMsg, []byte("marker"))
	WaitFor(t, waitTimeout, "marker in c2", func() bool { return recvOther.Count() >= 1 })
	sendAll(t, s1, newInc, bus.KindMsg, []byte("marker"))
	WaitFor(t, waitTimeout, "marker in c1", func() bool { return recvNew.Count() >= 1 })

	for _, r := range []struct {
		name          string
		c             *Collector
		cluster, self uuid.UUID
	}{{"replacement in c1", recvNew, c1, newInc}, {"same UUID in c2", recvOther, c2, oldInc}} {
		ds := r.c.Deliveries()
		if len(ds) != 1 || string(ds[0].Data) != "marker" {
			t.Fatalf("%s received %d payloads %+v; want only the marker", r.name, len(ds), ds)
		}
		if ds[0].Cluster != r.cluster || ds[0].To != r.self {
			t.Fatalf("%s: delivery addressed to %s/%s", r.name, ds[0].Cluster, ds[0].To)
		}
	}
}

func testBadInput(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := env.NewBus(t, BusConfig{Cluster: cluster, Self: a})
	busB, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})
	p := env.Prefix()
	subj := wire.Subject(p, cluster, b, a, bus.KindMsg)
	good := wire.AppendFrame(nil, [][]byte{[]byte("ok")})

	// Malformed frames on a valid subject.
	bad := [][]byte{
		nil, {0xB5}, {0xB5, 1}, {0xB5, 2, 1, 0}, {0xB5, 1, 0},
		{0xB5, 1, 2, 1, 'x'}, {0xB5, 1, 1, 5, 'x'}, append(bytes.Clone(good), 0),
	}
	rng := rand.New(rand.NewSource(1))
	for range 100 {
		r := make([]byte, rng.Intn(64))
		rng.Read(r)
		bad = append(bad, r)
	}
	for _, f := range bad {
		env.Inject(t, subj, f)
	}
	// Random bytes may happen to be a valid frame; each injection is either
	// delivered whole or reported once.
	WaitFor(t, waitTimeout, "every bad frame delivered or reported", func() bool {
		return recvB.Count()+recvB.DroppedCount(bus.DropBadFrame) == len(bad)
	})
	if n := recvB.DroppedCount(bus.DropBadFrame); n < 8 {
		t.Fatalf("only %d frames reported as bad", n)
	}
	for _, d := range recvB.Drops() {
		if d.Reason == bus.DropBadFrame && d.From != a {
			t.Fatalf("bad frame reported from %s, want %s (the subject's source)", d.From, a)
		}
	}
	delivered := recvB.Count()

	// Subjects inside b's inbox that are not raftbus subjects.
	cs, bs := cluster.String(), b.String()
	badSubjects := []string{
		p + "." + cs + "." + bs + ".not-a-uuid.msg",
		p + "." + cs + "." + bs + "." + strings.ToUpper(a.String()) + ".msg",
		p + "." + cs + "." + bs + "." + a.String() + ".msg.extra",
		p + "." + cs + "." + bs + "." + a.String() + ".MSG",
		p + "." + cs + "." + bs + "." + uuid.Nil.String() + ".msg",
	}
	for _, s := range badSubjects {
		env.Inject(t, s, good)
	}
	WaitFor(t, waitTimeout, "bad subjects reported", func() bool {
		return recvB.DroppedCount(bus.DropBadSubject) == len(badSubjects)
	})

	// The bus keeps delivering.
	sendAll(t, busA, b, bus.KindMsg, []byte("still alive"))
	WaitFor(t, waitTimeout, "delivery after bad input", func() bool { return recvB.Count() == delivered+1 })
	if d := recvB.Deliveries()[delivered]; string(d.Data) != "still alive" || d.From != a {
		t.Fatalf("unexpected delivery %+v", d)
	}
	s := busB.Stats()
	if int(s.Dropped[bus.DropBadFrame]) != recvB.DroppedCount(bus.DropBadFrame) || int(s.Dropped[bus.DropBadSubject]) != len(badSubjects) {
		t.Fatalf("stats dropped %v disagree with reports", s.Dropped)
	}
}

func testClose(t *testing.T, env Env) {
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := env.NewBus(t, BusConfig{Cluster: cluster, Self: a})
	busB, recvB := started(t, env, BusConfig{Cluster: cluster, Self: b})
	if err := busB.Start(NewCollector()); !errors.Is(err, bus.ErrAlreadyStarted) {
		t.Fatalf("second Start: %v, want ErrAlreadyStarted", err)
	}
	if err := busA.Start(NewCollector()); err != nil {
		t.Fatal(err)
	}
	sendAll(t, busA, b, bus.KindMsg, []byte("before close"))
	WaitFor(t, waitTimeout, "delivery", func() bool { return recvB.Count() == 1 })

	// Concurrent and repeated Close calls all succeed and return after the
	// bus has stopped.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := busA.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := busA.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if st := busA.State(); st != bus.StateClosed {
		t.Fatalf("State() after Close = %s", st)
	}
	if err := busA.Send(b, bus.KindMsg, []byte("after close")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if got := busA.Stats().Dropped[bus.DropClosed]; got < 1 {
		t.Fatalf("Dropped[closed] = %d after a refused Send", got)
	}

	// A bus closed before Start cannot be started.
	busC := env.NewBus(t, BusConfig{Cluster: cluster, Self: uuid.New()})
	if err := busC.Close(); err != nil {
		t.Fatal(err)
	}
	if err := busC.Start(NewCollector()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}

	// A bus with traffic in flight closes cleanly and leaves nothing running.
	busD := env.NewBus(t, BusConfig{Cluster: cluster, Self: uuid.New()})
	for i := range 1000 {
		_ = busD.Send(b, bus.KindMsg, seqPayload(i, 64))
	}
	if err := busD.Close(); err != nil {
		t.Fatal(err)
	}
	if err := busB.Close(); err != nil {
		t.Fatal(err)
	}
	CheckNoBusGoroutines(t)
}
