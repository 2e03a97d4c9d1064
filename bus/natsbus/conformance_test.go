package natsbus

import (
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

// env runs the conformance suite on one embedded server. Every bus has its
// own connection through its own proxy, so Stall can stop one bus's
// outbound traffic.
type env struct {
	srv    *server.Server
	inline bool // Config.InlinePublish

	mu       sync.Mutex
	proxies  map[uuid.UUID]*proxy
	injector *nats.Conn
}

func newEnv(t *testing.T) bustest.Env {
	return &env{srv: runServer(t, serverOptions(t)), proxies: map[uuid.UUID]*proxy{}}
}

func (e *env) Prefix() string { return bus.DefaultPrefix }

func (e *env) NewBus(t *testing.T, cfg bustest.BusConfig) bus.Bus {
	t.Helper()
	p := startProxy(t, e.srv.Addr().String())
	var opts []nats.Option
	if e.inline {
		// InlinePublish needs the write-tracking dialer.
		opts = ConnTuning{}.Options()
	}
	nc := connect(t, p.url(), opts...)
	b, err := New(Config{
		Conn:             nc,
		Cluster:          cfg.Cluster,
		Self:             cfg.Self,
		MaxQueuePayloads: cfg.MaxQueuePayloads,
		MaxQueueBytes:    cfg.MaxQueueBytes,
		MaxFrameBytes:    cfg.MaxFrameBytes,
		InlinePublish:    e.inline,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the bus closes before its
	// connection and proxy, and the proxy resumes first so that a sender
	// blocked on a stalled socket can finish.
	t.Cleanup(func() { _ = b.Close() })
	t.Cleanup(p.resume)
	e.mu.Lock()
	e.proxies[cfg.Self] = p
	e.mu.Unlock()
	return b
}

func (e *env) proxy(t *testing.T, id uuid.UUID) *proxy {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.proxies[id]
	if p == nil {
		t.Fatalf("no bus %s", id)
	}
	return p
}

func (e *env) Stall(t *testing.T, from, _ uuid.UUID)   { e.proxy(t, from).pause() }
func (e *env) Unstall(t *testing.T, from, _ uuid.UUID) { e.proxy(t, from).resume() }

func (e *env) Inject(t *testing.T, subject string, frame []byte) {
	t.Helper()
	e.mu.Lock()
	if e.injector == nil {
		e.injector = connect(t, e.srv.ClientURL())
	}
	nc := e.injector
	e.mu.Unlock()
	if err := nc.Publish(subject, frame); err != nil {
		t.Fatal(err)
	}
	// Once the server has answered the PING it has routed the message.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	bustest.Run(t, newEnv)
}

// TestConformanceInline runs the suite with Config.InlinePublish: order,
// bounds and a Send that never blocks behind a stalled socket must hold
// with it too.
func TestConformanceInline(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bustest.Env {
		e := newEnv(t).(*env)
		e.inline = true
		return e
	})
}
