package membus

import (
	"testing"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

// env adapts a Network to the conformance suite.
type env struct{ net *Network }

func (e env) Prefix() string { return bus.DefaultPrefix }

func (e env) NewBus(t *testing.T, cfg bustest.BusConfig) bus.Bus {
	t.Helper()
	b, err := e.net.NewBus(Config{
		Cluster:          cfg.Cluster,
		Self:             cfg.Self,
		MaxQueuePayloads: cfg.MaxQueuePayloads,
		MaxQueueBytes:    cfg.MaxQueueBytes,
		MaxFrameBytes:    cfg.MaxFrameBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func (e env) Stall(_ *testing.T, _, to uuid.UUID)   { e.net.Stall(to) }
func (e env) Unstall(_ *testing.T, _, to uuid.UUID) { e.net.Unstall(to) }
func (e env) Inject(_ *testing.T, subject string, frame []byte) {
	e.net.Inject(subject, frame)
}

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bustest.Env {
		n := NewNetwork(1)
		t.Cleanup(n.Close)
		return env{net: n}
	})
}
