// Package natsbus is the [bus.Bus] over core NATS (github.com/nats-io/nats.go).
//
// # Usage
//
//	nc, _ := nats.Connect(url, append(natsbus.ConnTuning{}.Options(), nats.MaxReconnects(-1))...)
//	b, err := natsbus.New(natsbus.Config{Conn: nc, Cluster: clusterID, Self: incarnation})
//	...
//	err = b.Start(receiver)            // subscribe to <prefix>.<cluster>.<self>.>
//	err = b.Send(peer, bus.KindMsg, p) // never blocks
//	defer b.Close()                    // leaves nc open
//
// # Contract
//
//  1. The bus publishes a frame to <prefix>.<cluster>.<dst>.<self>.<kind>
//     and subscribes only to <prefix>.<cluster>.<self>.>. Every inbound
//     subject is parsed again and must carry our cluster and incarnation
//     in canonical form, else the frame is dropped as bus.DropBadSubject.
//  2. Send is non-blocking and bounded: per destination at most
//     MaxQueuePayloads payloads and MaxQueueBytes bytes are queued (counting
//     the frame being published); beyond that it returns ErrQueueFull. While
//     the connection is not up Send returns ErrNotConnected: Raft retransmits
//     and old messages only delay it. One sender goroutine per destination
//     coalesces queued payloads of one kind into frames of at most
//     MaxFrameBytes, reusing its frame buffer, and exits after
//     IdleSenderTimeout without work. With Config.InlinePublish a sparse
//     Send with nothing queued for its destination publishes from the
//     caller instead (inline.go says when, and what it can wait for).
//  3. Core NATS has no backpressure towards subscribers: the subscription
//     has explicit pending limits (never unlimited), and messages the client
//     drops beyond them are reported to the Receiver as
//     bus.DropSlowConsumer with an unknown sender.
//  4. The connection is not owned. nats.go resubscribes after a reconnect,
//     so the bus survives server restarts if the connection's reconnect
//     options allow it. ConnTuning's options (ping interval, write
//     deadline) make nats.go leave a stalled server within seconds. State follows the connection's status events;
//     Stats().Reconnects and the reconnects metric count reconnections.
//  5. With a Registerer the bus exports raftbus_bus_* metrics (frames,
//     payloads and bytes sent and received, dropped_total{reason},
//     queued_payloads, reconnects_total, connected); no label carries an
//     identity.
package natsbus
