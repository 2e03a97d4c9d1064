package main

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/internal/wire"
)

// busSpec is one measurement of the transport section: count payloads of
// one size, sent until all arrive or the time cap passes.
type busSpec struct {
	EntrySize int           // bytes of the MsgApp's entry
	Count     int           // payloads to send
	Cap       time.Duration // stop sending after this long
	// FrameBytes is natsbus.Config.MaxFrameBytes of the sending bus (0:
	// its default, about 1 MiB).
	FrameBytes int
}

// busResult is what one side (bus or raw) achieved.
type busResult struct {
	Kind         string  `json:"kind"` // "bus" or "raw"
	Round        int     `json:"round"`
	EntrySize    int     `json:"entry_size"`
	PayloadBytes int     `json:"payload_bytes"`
	Sent         int64   `json:"sent"`
	Received     int64   `json:"received"`
	Dropped      int64   `json:"dropped"`
	Seconds      float64 `json:"seconds"`
	MsgsPerSec   float64 `json:"msgs_per_sec"`
	MBPerSec     float64 `json:"mb_per_sec"`
	// PayloadsPerFrame is how many payloads the bus coalesced per NATS
	// message on average (1 for raw).
	PayloadsPerFrame float64 `json:"payloads_per_frame"`
}

// raftPayload returns a real raftbridge envelope holding one MsgApp with a
// single entry of entrySize bytes, as a leader sends it to a follower.
func raftPayload(cluster, from, to uuid.UUID, entrySize int) []byte {
	m := &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
		Term: proto.Uint64(7), LogTerm: proto.Uint64(7), Index: proto.Uint64(100000), Commit: proto.Uint64(99999),
		Entries: []*raftpb.Entry{{
			Term: proto.Uint64(7), Index: proto.Uint64(100001), Type: raftpb.EntryNormal.Enum(),
			Data: bytes.Repeat([]byte{0x5a}, entrySize),
		}},
	}
	h := wire.Header{Cluster: cluster, From: wire.Endpoint{ID: 1, Incarnation: from}, To: wire.Endpoint{ID: 2, Incarnation: to}}
	b, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{m})
	if err != nil {
		panic(err) // a fixed, valid message: cannot fail
	}
	return b
}

// startBenchNATS starts an embedded server on a random loopback port.
func startBenchNATS() (*natsserver.Server, error) {
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats-server not ready within 10s")
	}
	return s, nil
}

func stopNATS(s *natsserver.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// connPair starts an embedded server and opens two client connections to
// it (one per side of a measurement); stop closes all three.
func connPair() (a, b *nats.Conn, stop func(), err error) {
	s, err := startBenchNATS()
	if err != nil {
		return nil, nil, nil, err
	}
	if a, err = nats.Connect(s.ClientURL()); err != nil {
		stopNATS(s)
		return nil, nil, nil, err
	}
	if b, err = nats.Connect(s.ClientURL()); err != nil {
		a.Close()
		stopNATS(s)
		return nil, nil, nil, err
	}
	return a, b, func() { b.Close(); a.Close(); stopNATS(s) }, nil
}

// busCounter is the receiving bus's Receiver.
type busCounter struct {
	delivered atomic.Int64
	dropped   atomic.Int64
	last      atomic.Int64 // UnixNano of the last delivery
}

func (r *busCounter) Deliver(bus.Delivery) {
	r.delivered.Add(1)
	r.last.Store(time.Now().UnixNano())
}

func (r *busCounter) Dropped(_ uuid.UUID, _ bus.DropReason, n int) { r.dropped.Add(int64(n)) }

// sinceStart is the time from start to the last arrival (the clock stops
// there, not after the wait for stragglers).
func sinceStart(start time.Time, lastNanos int64) time.Duration {
	if lastNanos == 0 {
		return time.Since(start)
	}
	return time.Unix(0, lastNanos).Sub(start)
}

// waitCount polls until have() reaches want or nothing arrived for quiet.
func waitCount(have func() int64, want int64, quiet time.Duration) {
	last, lastChange := have(), time.Now()
	for last < want && time.Since(lastChange) < quiet {
		time.Sleep(200 * time.Microsecond)
		if n := have(); n != last {
			last, lastChange = n, time.Now()
		}
	}
}

// runBusSide sends spec.Count envelopes from one natsbus incarnation to
// another through an embedded server, each bus on its own connection, and
// measures until the last one is delivered.
func runBusSide(spec busSpec) (*busResult, error) {
	sc, rc, stop, err := connPair()
	if err != nil {
		return nil, err
	}
	defer stop()
	cluster, src, dst := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	sender, err := natsbus.New(natsbus.Config{Conn: sc, Cluster: cluster, Self: src, MaxFrameBytes: spec.FrameBytes})
	if err != nil {
		return nil, err
	}
	defer sender.Close()
	receiver, err := natsbus.New(natsbus.Config{Conn: rc, Cluster: cluster, Self: dst})
	if err != nil {
		return nil, err
	}
	defer receiver.Close()
	recv := &busCounter{}
	if err := receiver.Start(recv); err != nil {
		return nil, err
	}
	payload := raftPayload(cluster, src, dst, spec.EntrySize)

	start := time.Now()
	var sent int64
	for sent < int64(spec.Count) && time.Since(start) < spec.Cap {
		// The same read-only bytes every time, as the raw side publishes
		// them: natsbus copies payloads into its frames and never writes to
		// them, so this measures the bus alone, not the producer of the
		// payloads (raftbridge marshals each envelope into a fresh buffer,
		// which costs the same over either transport).
		err := sender.Send(dst, bus.KindMsg, payload)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, bus.ErrQueueFull):
			// Raft would drop here; the benchmark wants every payload
			// through, so it waits a little for the sender to drain.
			time.Sleep(20 * time.Microsecond)
		default:
			return nil, err
		}
	}
	waitCount(func() int64 { return recv.delivered.Load() + recv.dropped.Load() }, sent, 2*time.Second)
	elapsed := sinceStart(start, recv.last.Load())
	st := sender.Stats()
	r := &busResult{
		Kind: "bus", EntrySize: spec.EntrySize, PayloadBytes: len(payload), Sent: sent,
		Received: recv.delivered.Load(), Dropped: recv.dropped.Load() + (sent - recv.delivered.Load() - recv.dropped.Load()),
		Seconds: elapsed.Seconds(),
	}
	r.MsgsPerSec = float64(r.Received) / elapsed.Seconds()
	r.MBPerSec = r.MsgsPerSec * float64(len(payload)) / 1e6
	if st.SentFrames > 0 {
		r.PayloadsPerFrame = float64(st.SentPayloads) / float64(st.SentFrames)
	}
	return r, nil
}

// runRawSide publishes the same bytes with nats.go on the same kind of
// server and subject and counts them on a plain subscription.
func runRawSide(spec busSpec) (*busResult, error) {
	pub, subConn, stop, err := connPair()
	if err != nil {
		return nil, err
	}
	defer stop()
	cluster, src, dst := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	subject := wire.Subject(bus.DefaultPrefix, cluster, dst, src, bus.KindMsg)
	var received, last atomic.Int64
	sub, err := subConn.Subscribe(subject, func(*nats.Msg) {
		received.Add(1)
		last.Store(time.Now().UnixNano())
	})
	if err != nil {
		return nil, err
	}
	// Core NATS gives the publisher no backpressure; generous limits keep
	// the baseline from losing messages in the client.
	if err := sub.SetPendingLimits(spec.Count+1, 8<<30); err != nil {
		return nil, err
	}
	if err := subConn.Flush(); err != nil {
		return nil, err
	}
	payload := raftPayload(cluster, src, dst, spec.EntrySize)

	start := time.Now()
	var sent int64
	for sent < int64(spec.Count) && time.Since(start) < spec.Cap {
		if err := pub.Publish(subject, payload); err != nil {
			return nil, err
		}
		sent++
	}
	if err := pub.FlushTimeout(10 * time.Second); err != nil {
		return nil, err
	}
	waitCount(received.Load, sent, 2*time.Second)
	elapsed := sinceStart(start, last.Load())
	dropped, _ := sub.Dropped()
	r := &busResult{
		Kind: "raw", EntrySize: spec.EntrySize, PayloadBytes: len(payload), Sent: sent,
		Received: received.Load(), Dropped: max(int64(dropped), sent-received.Load()),
		Seconds: elapsed.Seconds(), PayloadsPerFrame: 1,
	}
	r.MsgsPerSec = float64(r.Received) / elapsed.Seconds()
	r.MBPerSec = r.MsgsPerSec * float64(len(payload)) / 1e6
	return r, nil
}

// busSizes are the entry sizes of the transport section and how many
// payloads each sends in a full run.
var busSizes = []struct {
	size  int
	count int
}{
	{128, 2_000_000},
	{1 << 10, 1_000_000},
	{16 << 10, 150_000},
}

func describeBus(r *busResult) string {
	return fmt.Sprintf("%-3s %6d B entry (%6d B payload): %9.0f msgs/s %7.1f MB/s  %.1f payloads/frame  (%d sent, %d dropped, %.2fs)",
		r.Kind, r.EntrySize, r.PayloadBytes, r.MsgsPerSec, r.MBPerSec, r.PayloadsPerFrame, r.Sent, r.Dropped, r.Seconds)
}

// pingResult is the round-trip latency of one side in the ping-pong test.
type pingResult struct {
	Kind      string         `json:"kind"`
	Round     int            `json:"round"`
	EntrySize int            `json:"entry_size"`
	RTT       latencySummary `json:"rtt"`
}

// pingSpec bounds a ping-pong measurement.
type pingSpec struct {
	EntrySize int
	Count     int
	Cap       time.Duration
}

// signalReceiver forwards each delivery to a callback.
type signalReceiver struct{ fn func([]byte) }

func (r signalReceiver) Deliver(d bus.Delivery)                 { r.fn(d.Data) }
func (r signalReceiver) Dropped(uuid.UUID, bus.DropReason, int) {}

// runBusPing measures round trips A -> B -> A between two natsbus
// incarnations: B's receiver sends every payload straight back, as a Raft
// follower answers a MsgApp. One payload is in flight at a time, so this is
// the transport's latency, which is what a lightly loaded Raft group waits
// for.
func runBusPing(spec pingSpec) (*pingResult, error) {
	ca, cb, stop, err := connPair()
	if err != nil {
		return nil, err
	}
	defer stop()
	cluster, ida, idb := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	a, err := natsbus.New(natsbus.Config{Conn: ca, Cluster: cluster, Self: ida})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, err := natsbus.New(natsbus.Config{Conn: cb, Cluster: cluster, Self: idb})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	back := make(chan struct{}, 1)
	if err := a.Start(signalReceiver{fn: func([]byte) { back <- struct{}{} }}); err != nil {
		return nil, err
	}
	if err := b.Start(signalReceiver{fn: func(p []byte) { _ = b.Send(ida, bus.KindMsg, p) }}); err != nil {
		return nil, err
	}
	payload := raftPayload(cluster, ida, idb, spec.EntrySize)
	h := newHist()
	start := time.Now()
	for i := 0; i < spec.Count && time.Since(start) < spec.Cap; i++ {
		t0 := time.Now()
		if err := a.Send(idb, bus.KindMsg, payload); err != nil {
			return nil, err
		}
		select {
		case <-back:
		case <-time.After(5 * time.Second):
			return nil, errors.New("bus ping: no answer within 5s")
		}
		recordMicros(h, time.Since(t0))
	}
	return &pingResult{Kind: "bus", EntrySize: spec.EntrySize, RTT: summarize(h)}, nil
}

// runRawPing is runBusPing with plain nats.go: B's subscription callback
// publishes every message back to A's subject.
func runRawPing(spec pingSpec) (*pingResult, error) {
	ca, cb, stop, err := connPair()
	if err != nil {
		return nil, err
	}
	defer stop()
	cluster, ida, idb := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	toA := wire.Subject(bus.DefaultPrefix, cluster, ida, idb, bus.KindMsg)
	toB := wire.Subject(bus.DefaultPrefix, cluster, idb, ida, bus.KindMsg)
	back := make(chan struct{}, 1)
	if _, err := ca.Subscribe(toA, func(*nats.Msg) { back <- struct{}{} }); err != nil {
		return nil, err
	}
	if _, err := cb.Subscribe(toB, func(m *nats.Msg) { _ = cb.Publish(toA, m.Data) }); err != nil {
		return nil, err
	}
	if err := ca.Flush(); err != nil {
		return nil, err
	}
	if err := cb.Flush(); err != nil {
		return nil, err
	}
	payload := raftPayload(cluster, ida, idb, spec.EntrySize)
	h := newHist()
	start := time.Now()
	for i := 0; i < spec.Count && time.Since(start) < spec.Cap; i++ {
		t0 := time.Now()
		if err := ca.Publish(toB, payload); err != nil {
			return nil, err
		}
		select {
		case <-back:
		case <-time.After(5 * time.Second):
			return nil, errors.New("raw ping: no answer within 5s")
		}
		recordMicros(h, time.Since(t0))
	}
	return &pingResult{Kind: "raw", EntrySize: spec.EntrySize, RTT: summarize(h)}, nil
}

func describePing(r *pingResult) string {
	return fmt.Sprintf("%-3s %6d B entry ping-pong: RTT p50 %d µs p99 %d µs p99.9 %d µs (%d round trips)",
		r.Kind, r.EntrySize, r.RTT.P50, r.RTT.P99, r.RTT.P999, r.RTT.Count)
}
