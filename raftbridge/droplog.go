package raftbridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/raftbus/raftbus/bus"
)

// dropLogger rate-limits drop warnings per reason: the first drop of a
// reason is logged, then at most one per interval, each saying how many
// were suppressed since the previous one. A flood of bad traffic therefore
// costs a counter increment, not a log line (etcd#3806).
type dropLogger struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	state map[bus.DropReason]*dropLogState
}

type dropLogState struct {
	last       time.Time
	suppressed uint64
}

func newDropLogger(log *slog.Logger, interval time.Duration) *dropLogger {
	return &dropLogger{log: log, interval: interval, now: time.Now, state: make(map[bus.DropReason]*dropLogState)}
}

// allow reports whether a drop of reason may be logged now and, if so, how
// many drops of that reason went unlogged before it. Callers check it
// before building the log attributes, so suppressed drops cost nothing.
func (d *dropLogger) allow(reason bus.DropReason) (bool, uint64) {
	if !d.log.Enabled(context.Background(), slog.LevelWarn) {
		return false, 0
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state[reason]
	if st == nil {
		st = &dropLogState{}
		d.state[reason] = st
	} else if now.Sub(st.last) < d.interval {
		st.suppressed++
		return false, 0
	}
	st.last = now
	n := st.suppressed
	st.suppressed = 0
	return true, n
}

// warn logs one drop, if the rate limit allows it.
func (d *dropLogger) warn(reason bus.DropReason, msg string, attrs func() []slog.Attr) {
	ok, suppressed := d.allow(reason)
	if !ok {
		return
	}
	all := append(attrs(), slog.String("reason", string(reason)), slog.Uint64("suppressed", suppressed))
	d.log.LogAttrs(context.Background(), slog.LevelWarn, msg, all...)
}
