package outq

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// recorder is a PublishFunc that decodes and records frames. While gate is
// non-nil, publishing waits for it (or for the context).
type recorder struct {
	mu      sync.Mutex
	frames  []recorded
	gate    chan struct{}
	entered chan struct{}
}

type recorded struct {
	kind     bus.Kind
	subject  string
	size     int
	payloads []string
}

func (r *recorder) publish(ctx context.Context, f *Frame) {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return
		}
	}
	rec := recorded{kind: f.Kind, subject: f.Subject, size: len(f.Data)}
	if err := wire.DecodeFrame(f.Data, func(p []byte) { rec.payloads = append(rec.payloads, string(p)) }); err != nil {
		panic(err)
	}
	if len(rec.payloads) != f.Payloads {
		panic("payload count mismatch")
	}
	r.mu.Lock()
	r.frames = append(r.frames, rec)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.frames...)
}

func newQueues(r *recorder, maxFrame int) *Queues {
	return New(Config{
		MaxPayloads: 100, MaxBytes: 1 << 20, MaxFrameBytes: maxFrame, IdleTimeout: time.Minute,
		Publish: r.publish,
		Subject: func(to uuid.UUID, kind bus.Kind) string { return to.String() + "." + string(kind) },
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestFramesSplitAtKindChangesAndKeepOrder(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	qs := newQueues(r, 1024)
	defer qs.Close()
	to := uuid.New()
	must := func(kind bus.Kind, p string) {
		t.Helper()
		if err := qs.Enqueue(to, kind, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	must(bus.KindMsg, "0")
	<-r.entered // the sender holds frame "0" and waits
	for _, x := range []struct {
		k bus.Kind
		p string
	}{{bus.KindMsg, "1"}, {bus.KindMsg, "2"}, {bus.KindSnap, "3"}, {bus.KindMsg, "4"}} {
		must(x.k, x.p)
	}
	if got := qs.Depths()[to]; got.Payloads != 5 || got.Bytes != 5 {
		t.Fatalf("depth %+v, want 5 payloads of 1 byte (the frame in flight counts)", got)
	}
	r.mu.Lock()
	close(r.gate)
	r.gate = nil
	r.mu.Unlock()
	waitFor(t, "4 frames", func() bool { return len(r.snapshot()) == 4 })
	want := []recorded{
		{kind: bus.KindMsg, payloads: []string{"0"}},
		{kind: bus.KindMsg, payloads: []string{"1", "2"}},
		{kind: bus.KindSnap, payloads: []string{"3"}},
		{kind: bus.KindMsg, payloads: []string{"4"}},
	}
	for i, f := range r.snapshot() {
		if f.kind != want[i].kind || len(f.payloads) != len(want[i].payloads) || f.subject != to.String()+"."+string(f.kind) {
			t.Fatalf("frame %d = %+v, want %+v", i, f, want[i])
		}
		for j := range f.payloads {
			if f.payloads[j] != want[i].payloads[j] {
				t.Fatalf("frame %d = %+v, want %+v", i, f, want[i])
			}
		}
	}
	waitFor(t, "queue empty", func() bool { return qs.Depths()[to].Payloads == 0 && qs.Queued() == 0 })
}

func TestFramesRespectMaxFrameBytes(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	const maxFrame = 256
	qs := newQueues(r, maxFrame)
	defer qs.Close()
	to := uuid.New()
	max := wire.MaxPayload(maxFrame)
	if err := qs.Enqueue(to, bus.KindMsg, make([]byte, max+1)); err != bus.ErrTooLarge {
		t.Fatalf("payload of %d bytes: %v, want ErrTooLarge", max+1, err)
	}
	sizes := []int{max, 100, 100, 100, 1, 0}
	for _, n := range sizes {
		if err := qs.Enqueue(to, bus.KindMsg, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	<-r.entered
	r.mu.Lock()
	close(r.gate)
	r.gate = nil
	r.mu.Unlock()
	waitFor(t, "all payloads", func() bool {
		n := 0
		for _, f := range r.snapshot() {
			n += len(f.payloads)
		}
		return n == len(sizes)
	})
	for _, f := range r.snapshot() {
		if f.size > maxFrame {
			t.Fatalf("frame of %d bytes exceeds %d", f.size, maxFrame)
		}
	}
	if n := len(r.snapshot()); n >= len(sizes) {
		t.Fatalf("%d frames for %d small payloads: no coalescing", n, len(sizes))
	}
}

func TestBoundsAndClose(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	qs := New(Config{
		MaxPayloads: 3, MaxBytes: 10, MaxFrameBytes: 256, Publish: r.publish,
		Subject: func(uuid.UUID, bus.Kind) string { return "s" },
	})
	to := uuid.New()
	if err := qs.Enqueue(to, bus.KindMsg, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	<-r.entered
	if err := qs.Enqueue(to, bus.KindMsg, []byte("123456")); err != bus.ErrQueueFull {
		t.Fatalf("over the byte bound: %v", err)
	}
	for range 2 {
		if err := qs.Enqueue(to, bus.KindMsg, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := qs.Enqueue(to, bus.KindMsg, []byte("1")); err != bus.ErrQueueFull {
		t.Fatalf("over the count bound: %v", err)
	}
	if err := qs.Enqueue(uuid.Nil, bus.KindMsg, nil); !errors.Is(err, bus.ErrInvalidToken) {
		t.Fatalf("nil destination: %v", err)
	}
	if err := qs.Enqueue(to, "Bad.Kind", nil); !errors.Is(err, bus.ErrInvalidToken) {
		t.Fatalf("bad kind: %v", err)
	}
	// Close cancels the blocked publish (whose payloads are the publish
	// function's to account for) and reports the two still queued.
	if got := qs.Close(); got != 2 {
		t.Fatalf("Close discarded %d payloads, want 2", got)
	}
	if got := qs.Close(); got != 0 {
		t.Fatalf("second Close discarded %d", got)
	}
	if err := qs.Enqueue(to, bus.KindMsg, nil); err != bus.ErrClosed {
		t.Fatalf("Enqueue after Close: %v", err)
	}
	if len(r.snapshot()) != 0 {
		t.Fatal("a frame was published")
	}
}
