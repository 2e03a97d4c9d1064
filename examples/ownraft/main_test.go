package main

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"
)

// want is what run prints, over either bus.
const want = `bootstrapped 3 nodes; a leader is elected
a follower proposed greeting=hello; applied on 3 nodes
added n4; it caught up from a snapshot: true, greeting=hello
removed a follower; its Raft ID and incarnation are tombstoned on 3 nodes
restarted 3 nodes from their data directories; state and tombstones kept: true
a follower proposed greeting=again; applied on 3 nodes
`

func runExample(t *testing.T, busKind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(ctx, &out, busKind, t.TempDir(), logger); err != nil {
		t.Fatalf("%v; output so far:\n%s", err, out.String())
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestOwnRaftLoopOverNATS runs the example on an embedded NATS server with
// one nkey user per incarnation.
func TestOwnRaftLoopOverNATS(t *testing.T) { runExample(t, "nats") }

// TestOwnRaftLoopOverMembus runs the same over the in-memory bus.
func TestOwnRaftLoopOverMembus(t *testing.T) { runExample(t, "mem") }

// TestOwnRaftLoopOverLossyMembus runs it on a network that drops,
// duplicates, reorders and delays frames.
func TestOwnRaftLoopOverLossyMembus(t *testing.T) { runExample(t, "lossy") }

// testWriter sends the nodes' warnings to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
