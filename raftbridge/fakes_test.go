package raftbridge

import (
	"context"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/internal/wire"
)

// nopRaft accepts everything and remembers nothing.
type nopRaft struct{}

func (nopRaft) Process(context.Context, *raftpb.Message) error { return nil }
func (nopRaft) ReportUnreachable(uint64)                       {}
func (nopRaft) ReportSnapshot(uint64, raft.SnapshotStatus)     {}

// recordingRaft records every call the bridge makes. It optionally
// implements SnapshotReceiver through snapshotRaft.
type recordingRaft struct {
	mu          sync.Mutex
	processed   []*raftpb.Message
	unreachable map[uint64]int
	snapshots   map[uint64][]raft.SnapshotStatus
	processErr  error
}

func newRecordingRaft() *recordingRaft {
	return &recordingRaft{unreachable: make(map[uint64]int), snapshots: make(map[uint64][]raft.SnapshotStatus)}
}

func (r *recordingRaft) Process(_ context.Context, m *raftpb.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.processed = append(r.processed, m)
	return r.processErr
}

func (r *recordingRaft) ReportUnreachable(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable[id]++
}

func (r *recordingRaft) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapshots[id] = append(r.snapshots[id], st)
}

func (r *recordingRaft) processedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.processed)
}

func (r *recordingRaft) processedMessages() []*raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*raftpb.Message(nil), r.processed...)
}

func (r *recordingRaft) unreachableCount(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[id]
}

func (r *recordingRaft) snapshotStatuses(id uint64) []raft.SnapshotStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raft.SnapshotStatus(nil), r.snapshots[id]...)
}

// captureBus records every payload sent and delivers nothing.
type captureBus struct {
	discardBus
	mu   sync.Mutex
	sent []capturedPayload
}

type capturedPayload struct {
	to   uuid.UUID
	kind bus.Kind
	data []byte
}

func (c *captureBus) Send(to uuid.UUID, kind bus.Kind, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, capturedPayload{to, kind, data})
	return nil
}

func (c *captureBus) payloads() []capturedPayload {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capturedPayload(nil), c.sent...)
}

// acks decodes every snapshot ack sent so far.
func (c *captureBus) acks(t testing.TB) []*snapAck {
	t.Helper()
	var out []*snapAck
	for _, p := range c.payloads() {
		h, body, err := wire.DecodeHeader(p.data)
		if err != nil {
			t.Fatal(err)
		}
		if h.Kind != wire.EnvelopeSnapAck {
			continue
		}
		a, err := decodeSnapAck(h, body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}
