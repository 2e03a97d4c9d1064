package raftbridge

import (
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
)

// reporter delivers ReportUnreachable and ReportSnapshot to Raft from its
// own goroutine. Send must never block its caller (the raft loop), and a
// Raft implementation may well wait for that very loop inside a report
// (raft.Node's do: they hand the report to the node goroutine), so reports
// are queued here instead of being made inside Send.
//
// The queue coalesces: one pending unreachable flag and the latest
// snapshot status per Raft ID. Raft needs nothing more (it tracks one
// pending snapshot per follower, and unreachable is a hint), and it bounds
// the queue by the number of peers.
//
// Its goroutine runs only while there is something to report, and for
// reporterIdle after: a host with a thousand idle groups holds no reporter
// goroutine at all.
type reporter struct {
	raft  Raft
	meter *meter
	// spawn starts run on a goroutine Close waits for (Bridge.spawn);
	// done ends it. enabled is set once the bridge started: reports made
	// before wait for it.
	spawn   func(func()) bool
	done    <-chan struct{}
	enabled atomic.Bool
	running bool // guarded by mu

	mu          sync.Mutex
	unreachable map[uint64]struct{}
	snapshot    map[uint64]raft.SnapshotStatus
	wake        chan struct{} // capacity 1: "there is something pending"

	// Spare maps swapped in by run, so delivering does not allocate. Only
	// run touches them.
	spareUnreachable map[uint64]struct{}
	spareSnapshot    map[uint64]raft.SnapshotStatus
}

// maxPendingReports bounds each pending map. Raft only sends to IDs in its
// configuration, so it is never reached in practice; beyond it unreachable
// hints are dropped, while snapshot statuses (which Raft waits for) are
// kept.
const maxPendingReports = 4096

// reporterIdle is how long the reporter's goroutine waits for the next
// report before it exits.
const reporterIdle = time.Second

func newReporter(r Raft, m *meter) *reporter {
	return &reporter{
		raft:        r,
		meter:       m,
		unreachable: make(map[uint64]struct{}),
		snapshot:    make(map[uint64]raft.SnapshotStatus),
		wake:        make(chan struct{}, 1),

		spareUnreachable: make(map[uint64]struct{}),
		spareSnapshot:    make(map[uint64]raft.SnapshotStatus),
	}
}

func (r *reporter) reportUnreachable(id uint64) {
	r.mu.Lock()
	if len(r.unreachable) < maxPendingReports {
		r.unreachable[id] = struct{}{}
	}
	r.mu.Unlock()
	r.signal()
}

func (r *reporter) reportSnapshot(id uint64, st raft.SnapshotStatus) {
	r.mu.Lock()
	r.snapshot[id] = st
	r.mu.Unlock()
	r.signal()
}

// signal wakes the goroutine, starting it if none runs. The wake token
// goes first: a goroutine deciding to exit sees it, or has exited before
// and a new one starts.
func (r *reporter) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if !r.enabled.Load() {
		return
	}
	r.mu.Lock()
	start := !r.running
	r.running = true
	r.mu.Unlock()
	if start && !r.spawn(r.run) {
		r.mu.Lock()
		r.running = false // closing: nothing is delivered any more
		r.mu.Unlock()
	}
}

// start enables delivery, and delivers what was reported before.
func (r *reporter) start() {
	r.enabled.Store(true)
	r.signal()
}

// run delivers pending reports until done is closed, or until nothing was
// reported for reporterIdle; reports still pending at done are discarded
// (the node is shutting down).
func (r *reporter) run() {
	idle := time.NewTimer(reporterIdle)
	defer idle.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.wake:
		case <-idle.C:
			r.mu.Lock()
			if len(r.unreachable) == 0 && len(r.snapshot) == 0 && len(r.wake) == 0 {
				r.running = false
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		unreachable, snapshot := r.unreachable, r.snapshot
		r.unreachable, r.snapshot = r.spareUnreachable, r.spareSnapshot
		r.mu.Unlock()
		for id, st := range snapshot {
			r.raft.ReportSnapshot(id, st)
		}
		for id := range unreachable {
			r.meter.unreachable(id)
			r.raft.ReportUnreachable(id)
		}
		clear(unreachable)
		clear(snapshot)
		r.spareUnreachable, r.spareSnapshot = unreachable, snapshot
		idle.Reset(reporterIdle)
	}
}
