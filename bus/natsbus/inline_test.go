package natsbus

import (
	"encoding/binary"
	"math/rand"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

// TestInlinePublishKeepsOrder mixes sparse Sends (published inline) with
// bursts (queued and coalesced) to one destination and checks that every
// payload arrives once, in order, and that both paths were taken.
func TestInlinePublishKeepsOrder(t *testing.T) {
	s := runServer(t, serverOptions(t))
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := newBus(t, Config{Conn: connect(t, s.ClientURL(), ConnTuning{}.Options()...), Cluster: cluster, Self: a, InlinePublish: true})
	recv := bustest.NewCollector()
	startedBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: b}, recv)

	rng := rand.New(rand.NewSource(1))
	const n = 4000
	for i := 0; i < n; {
		burst := 1 + rng.Intn(40)
		for j := 0; j < burst && i < n; j++ {
			p := make([]byte, 8+rng.Intn(200))
			binary.BigEndian.PutUint32(p, uint32(i))
			if err := busA.Send(b, bus.KindMsg, p); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			i++
		}
		if rng.Intn(3) == 0 {
			// Let the queue drain so that the next Send may go inline.
			want := i
			bustest.WaitFor(t, 10*time.Second, "catch up", func() bool { return recv.Count() == want })
		}
	}
	bustest.WaitFor(t, 10*time.Second, "all delivered", func() bool { return recv.Count() == n })
	for i, d := range recv.Deliveries() {
		if got := int(binary.BigEndian.Uint32(d.Data)); got != i {
			t.Fatalf("delivery %d carries payload %d", i, got)
		}
	}
	st := busA.Stats()
	inlined := busA.inlined.Load()
	t.Logf("%d payloads: %d inline, %d frames", n, inlined, st.SentFrames)
	if inlined == 0 || inlined == n {
		t.Fatalf("%d of %d payloads published inline; want both paths taken", inlined, n)
	}
	if st.SentPayloads != n || st.SentFrames >= n {
		t.Fatalf("sent %d payloads in %d frames: want %d, coalesced", st.SentPayloads, st.SentFrames, n)
	}
}

// TestInlinePublishYieldsToBusyPublisher checks that Send does not wait
// for a publish in progress: while pubMu is held (as by a sender stuck on
// a full socket), Send queues instead, and the payload goes out after.
func TestInlinePublishYieldsToBusyPublisher(t *testing.T) {
	s := runServer(t, serverOptions(t))
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA := newBus(t, Config{Conn: connect(t, s.ClientURL(), ConnTuning{}.Options()...), Cluster: cluster, Self: a, InlinePublish: true})
	recv := bustest.NewCollector()
	startedBus(t, Config{Conn: connect(t, s.ClientURL()), Cluster: cluster, Self: b}, recv)

	busA.pubMu.Lock()
	sent := make(chan error, 1)
	go func() { sent <- busA.Send(b, bus.KindMsg, []byte("while busy")) }()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		busA.pubMu.Unlock()
		t.Fatal("Send waited for the publish in progress")
	}
	if q := busA.Stats().Queues[b].Payloads; q != 1 {
		busA.pubMu.Unlock()
		t.Fatalf("queued %d payloads, want 1", q)
	}
	busA.pubMu.Unlock()
	bustest.WaitFor(t, 10*time.Second, "delivery", func() bool { return recv.Count() == 1 })
	if busA.inlined.Load() != 0 {
		t.Fatal("published inline while another publish was in progress")
	}
}
