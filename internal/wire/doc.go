// Package wire holds raftbus's byte-level codecs: the raftbridge envelope
// (header, message batches; the snapshot chunk and ack bodies stay in
// raftbridge; version 1 for group 0, version 2 with the Raft group for
// the others), a host's batches of envelopes and its pings (batch.go), the
// bus frame that coalesces payloads into one network
// message, and the subject layout of the buses.
//
// The formats are specified in raftbridge/doc.go (Wire format) and
// bus/doc.go (Addressing, Frames); this package is their only
// implementation. It is internal so that the public packages expose what
// a user needs (a Bus, a Bridge) and not the codecs, which tests, the
// buses and the benchmarks (bench, a nested module, may import it because
// its import path lies under this module's) still use directly.
//
// Every decoder checks every count and length against the bytes that
// remain before it allocates, returns an error wrapping [ErrMalformed],
// [ErrVersion] or [ErrBadFrame] (subjects: bus.ErrInvalidToken), and never
// panics.
package wire
