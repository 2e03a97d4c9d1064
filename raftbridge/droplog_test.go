package raftbridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recordHandler keeps the records it is given.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

func TestDropLogIsRateLimitedPerReason(t *testing.T) {
	h := &recordHandler{}
	d := newDropLogger(slog.New(h), 10*time.Second)
	now := time.Unix(0, 0)
	d.now = func() time.Time { return now }
	attrs := func() []slog.Attr { return []slog.Attr{slog.String("peer_id", hexID(2))} }
	for range 5 {
		d.warn(DropTombstoned, "dropped", attrs)
	}
	d.warn(DropDecode, "dropped", attrs) // another reason has its own budget
	now = now.Add(11 * time.Second)
	d.warn(DropTombstoned, "dropped", attrs)
	if len(h.records) != 3 {
		t.Fatalf("%d records, want 3", len(h.records))
	}
	last := h.records[2]
	if got := attr(last, "suppressed").Uint64(); got != 4 {
		t.Errorf("suppressed = %d, want 4", got)
	}
	if got := attr(last, "reason").String(); got != string(DropTombstoned) {
		t.Errorf("reason = %q", got)
	}
	if got := attr(last, "peer_id").String(); got != "0000000000000002" {
		t.Errorf("peer_id = %q", got)
	}
}
