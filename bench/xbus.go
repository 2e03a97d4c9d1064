package main

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/natsbus"
)

// newInlineBus is the bus of the "raftbus-xinline" transport
// (--exp-inline-bus): natsbus with Config.InlinePublish, so that a Send
// with nothing queued for its destination is published from the raft
// loop's goroutine instead of being handed to the destination's sender
// goroutine. Comparing it with "raftbus" (the default, queue and sender
// goroutine) in one run measures that hand-off. An earlier version of this
// experiment was a minimal bus of its own, without queue or bounds; the
// option now lives in natsbus (bus/natsbus/inline.go), with the queue kept
// for bursts and per-destination order preserved.
func newInlineBus(nc *nats.Conn, cluster, self uuid.UUID) bus.Bus {
	// InlinePublish needs a connection made with natsbus.ConnTuning's
	// options (their dialer follows the socket writes), so the bus gets a
	// connection of its own to the same server, closed with it; nc stays
	// idle.
	own, err := nats.Connect(nc.ConnectedUrl(), append(natsbus.ConnTuning{}.Options(),
		nats.Name(nc.Opts.Name), nats.MaxReconnects(-1))...)
	if err != nil {
		return failedBus{fmt.Errorf("inline bus: connect: %w", err)}
	}
	b, err := natsbus.New(natsbus.Config{Conn: own, Cluster: cluster, Self: self, InlinePublish: true})
	if err != nil {
		own.Close()
		return failedBus{fmt.Errorf("inline bus: %w", err)}
	}
	return ownConnBus{b, own}
}

// ownConnBus closes its connection after the bus.
type ownConnBus struct {
	*natsbus.Bus
	nc *nats.Conn
}

func (b ownConnBus) Close() error {
	err := b.Bus.Close()
	b.nc.Close()
	return err
}

// failedBus refuses everything with the error natsbus.New returned, so a
// misconfigured experiment shows up as a cluster that never commits.
type failedBus struct{ err error }

func (f failedBus) Send(uuid.UUID, bus.Kind, []byte) error { return f.err }
func (f failedBus) Start(bus.Receiver) error               { return f.err }
func (f failedBus) State() bus.State                       { return bus.StateClosed }
func (f failedBus) Stats() bus.Stats                       { return bus.Stats{} }
func (f failedBus) Close() error                           { return nil }
