package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRaftLoggerRateLimitsRepeatedLines(t *testing.T) {
	var buf bytes.Buffer
	r := newRaftLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }

	// The flood of issue 11: 355 identical lines.
	for i := range 355 {
		r.Infof("%x [term: %d] ignored a %s message with lower term from %x [term: %d]", 1, 5, "MsgApp", i, 4)
	}
	r.Info("unformatted", " line")
	r.Info("unformatted", " line")
	r.Errorf("error %d", 1)
	r.Errorf("error %d", 2)
	lines := logLines(t, &buf)
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4 (one per kind, every error): %v", len(lines), lines)
	}
	if !strings.Contains(lines[0]["msg"].(string), "ignored a MsgApp") {
		t.Errorf("first line %v", lines[0])
	}

	now = now.Add(raftLogInterval)
	r.Infof("%x [term: %d] ignored a %s message with lower term from %x [term: %d]", 1, 5, "MsgApp", 999, 4)
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["suppressed"] != float64(354) {
		t.Fatalf("after the interval: %v, want one line with suppressed=354", lines)
	}
	r.Infof("%x [term: %d] ignored a %s message with lower term from %x [term: %d]", 1, 5, "MsgApp", 1000, 4)
	if lines = logLines(t, &buf); len(lines) != 0 {
		t.Fatalf("within the interval again: %v", lines)
	}
}

func TestRaftLoggerBoundsKinds(t *testing.T) {
	r := newRaftLogger(slog.New(slog.DiscardHandler))
	for i := range 10 * maxRaftLogKinds {
		r.allow(fmt.Sprint("line ", i))
	}
	if len(r.kinds) > maxRaftLogKinds {
		t.Fatalf("%d kinds kept, bound %d", len(r.kinds), maxRaftLogKinds)
	}
}

func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}
