// Package membus is an in-memory [bus.Bus] for deterministic tests.
//
// A [Network] plays the NATS server: buses attached to it with
// [Network.NewBus] publish frames on the subjects of the raftbus scheme and
// receive only what matches their inbox subject, exactly as NATS would route
// it, so a bus never sees traffic addressed to another incarnation or
// another cluster. The send side (bounded per-destination queues, one
// coalescing sender goroutine per destination) is the same code the NATS
// bus uses, so queueing and drop behaviour match.
//
// Between publish and delivery the network injects faults:
// [Network.SetDropRate], [Network.SetDuplicateRate], [Network.SetReorderRate],
// [Network.SetDelay], [Network.Partition], [Network.Isolate], [Network.Heal]
// and [Network.Stall]. Every random decision is drawn from one random source
// seeded by [NewNetwork] and taken under the network's mutex, so one seed
// gives one sequence of decisions (one per published frame, in publish
// order). Frames lost to faults are counted in the sending bus's
// Stats().Dropped[bus.DropPartitioned]. [Network.Inject] publishes raw bytes
// on any subject, bypassing faults, as a test would with a NATS client.
//
// # Manual delivery
//
// [Network.Hold] turns the network into a delivery pump for step-by-step
// tests (all destinations, or the ones named): frames that pass the
// partitions and the drop rate are queued in publish order instead of
// delivered, and [Network.Pending] lists them (ID, source, destination,
// kind, size). The test then decides everything: [Network.Deliver] hands
// over the frames it names in the order it names them (reorder),
// [Network.DeliverFunc] and [Network.DeliverAll] those that match in
// publish order, [Network.Duplicate] delivers a copy and keeps the frame
// held (replay), [Network.Drop] discards (loss, counted as
// bus.DropPartitioned), [Network.Resume] releases everything and ends
// manual mode. The deliver calls return once each receiving bus's Receiver
// has returned from the frame, so a test knows its step has been taken.
// The random duplicate, reorder and delay faults do not touch held frames.
// The queue is bounded ([Network.SetHoldLimit], default 65536 frames and
// 256 MiB); a frame beyond it is lost, counted as bus.DropPartitioned and
// in [Network.HoldOverflow].
//
// Each bus delivers from one goroutine. Its inbound buffer is bounded like a
// NATS subscription's pending buffer; overflow is reported as
// bus.DropSlowConsumer. Frames are copied when published, so receivers own
// the payload bytes they are given.
package membus
