package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
)

// raftLogInterval is the least time between two raft log lines of the same
// kind, as the bridge's DefaultDropLogInterval is for drop warnings.
const raftLogInterval = 10 * time.Second

// maxRaftLogKinds bounds the rate limiter's memory: raft's format strings
// are a fixed set, but Info(v...) lines are keyed by their text.
const maxRaftLogKinds = 512

// raftLogger adapts slog to raft.Logger. Raft's Fatal and Panic mean an
// invariant is broken (a corrupted log); they log at error level and panic
// rather than exit, so the process owner decides.
//
// Debug, Info and Warning lines are rate-limited per kind (the format
// string, or the text of an unformatted line): the first is logged, then at
// most one per raftLogInterval, carrying how many were suppressed since the
// previous one. A flood of stale or misdirected messages makes raft repeat
// the same line for every message ("ignored a MsgApp with lower term", 355
// identical lines during one flood); the limit turns that into one line per
// interval. Errors and panics are never suppressed.
type raftLogger struct {
	l        *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*raftLogKind
}

type raftLogKind struct {
	last       time.Time
	suppressed uint64
}

func newRaftLogger(l *slog.Logger) *raftLogger {
	return &raftLogger{l: l.With("component", "raft"), interval: raftLogInterval, now: time.Now, kinds: make(map[string]*raftLogKind)}
}

var _ raft.Logger = (*raftLogger)(nil)

// allow reports whether a line of kind may be logged now, and how many
// were suppressed before it.
func (r *raftLogger) allow(kind string) (bool, uint64) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kinds[kind]
	if k == nil {
		if len(r.kinds) >= maxRaftLogKinds {
			clear(r.kinds)
		}
		r.kinds[kind] = &raftLogKind{last: now}
		return true, 0
	}
	if now.Sub(k.last) < r.interval {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return true, n
}

// limited logs a rate-limited line; text builds it only when it is logged.
func (r *raftLogger) limited(level slog.Level, kind string, text func() string) {
	if !r.l.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := r.allow(kind)
	if !ok {
		return
	}
	if suppressed > 0 {
		r.l.Log(context.Background(), level, text(), "suppressed", suppressed)
		return
	}
	r.l.Log(context.Background(), level, text())
}

func (r *raftLogger) log(level slog.Level, msg string) {
	r.l.Log(context.Background(), level, msg)
}

func (r *raftLogger) Debug(v ...any) {
	s := fmt.Sprint(v...)
	r.limited(slog.LevelDebug, s, func() string { return s })
}
func (r *raftLogger) Debugf(format string, v ...any) {
	r.limited(slog.LevelDebug, format, func() string { return fmt.Sprintf(format, v...) })
}
func (r *raftLogger) Info(v ...any) {
	s := fmt.Sprint(v...)
	r.limited(slog.LevelInfo, s, func() string { return s })
}
func (r *raftLogger) Infof(format string, v ...any) {
	r.limited(slog.LevelInfo, format, func() string { return fmt.Sprintf(format, v...) })
}
func (r *raftLogger) Warning(v ...any) {
	s := fmt.Sprint(v...)
	r.limited(slog.LevelWarn, s, func() string { return s })
}
func (r *raftLogger) Warningf(format string, v ...any) {
	r.limited(slog.LevelWarn, format, func() string { return fmt.Sprintf(format, v...) })
}
func (r *raftLogger) Error(v ...any) { r.log(slog.LevelError, fmt.Sprint(v...)) }
func (r *raftLogger) Errorf(format string, v ...any) {
	r.log(slog.LevelError, fmt.Sprintf(format, v...))
}
func (r *raftLogger) Fatal(v ...any)                 { r.Panic(v...) }
func (r *raftLogger) Fatalf(format string, v ...any) { r.Panicf(format, v...) }
func (r *raftLogger) Panic(v ...any) {
	s := fmt.Sprint(v...)
	r.log(slog.LevelError, s)
	panic(s)
}
func (r *raftLogger) Panicf(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	r.log(slog.LevelError, s)
	panic(s)
}
