// Package bustest is the conformance suite every raftbus [bus.Bus]
// implementation must pass, plus small helpers for tests that use buses.
//
// An implementation's tests call [Run] with a function that builds a fresh
// [Env] per subtest: something that can create buses for a (cluster,
// incarnation), stall the path from one incarnation to another so that the
// sender's queue fills, and publish raw bytes on any subject. The suite
// then checks the bus contract: delivery with the right identities, order
// per (source, destination, kind), coalescing, bounded never-blocking Send,
// ErrTooLarge, isolation between incarnations and clusters, robustness
// against malformed frames and subjects, and a clean, idempotent Close
// without goroutine leaks.
//
// [Collector] records what a bus delivers and [WaitFor] polls a condition
// with a deadline; tests never sleep for a fixed time.
package bustest
