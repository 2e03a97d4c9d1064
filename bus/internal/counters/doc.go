// Package counters holds the lock-free traffic counters shared by the
// raftbus buses and turns them into a bus.Stats snapshot.
//
// Counters are written with atomic adds from the send goroutines and the
// delivery goroutine and read by Snapshot at any time; a snapshot is
// therefore consistent per counter, not across counters.
package counters
