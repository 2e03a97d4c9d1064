// Package outq is the send side shared by every raftbus bus: one bounded
// queue per destination incarnation and one sender goroutine per queue that
// coalesces queued payloads of one kind into frames (wire.AppendFrame) and
// hands each frame to the bus's publish function.
//
// Contract:
//
//  1. Enqueue never blocks on the network. It takes two short mutexes and
//     either queues the payload or returns bus.ErrQueueFull, bus.ErrTooLarge,
//     bus.ErrClosed or a wrapped bus.ErrInvalidToken, unwrapped so that the
//     bus can wrap them with its own package prefix without allocating.
//  2. A queue is bounded by payload count and by payload bytes. Payloads
//     stay counted until the frame holding them has been published, so the
//     bound covers what the sender goroutine holds while it is blocked in a
//     publish, not only what waits behind it.
//  3. Payloads of one destination are published in the order they were
//     queued; a frame holds consecutive payloads of a single kind and is at
//     most MaxFrameBytes long.
//  4. The frame buffer is reused by its sender goroutine: the publish
//     function must copy Frame.Data if it keeps it after returning.
//  5. A sender goroutine with nothing to send for IdleTimeout retires and
//     its queue is forgotten, so destinations that stop being used (removed
//     incarnations) cost nothing.
//  6. Close discards what is queued, cancels the context passed to publish
//     and waits for every sender goroutine.
package outq
