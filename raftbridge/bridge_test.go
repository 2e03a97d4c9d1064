package raftbridge

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
)

func TestClusterCommitsAndAgrees(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 1})
	c.propose(values("v", 1000))
	c.assertSameLog()
	if n := len(c.node(1).appliedValues()); n < 1000 {
		t.Fatalf("node 1 applied %d values, want at least 1000", n)
	}
	for _, tn := range c.all() {
		st := tn.bridge.Stats()
		for reason, n := range st.Dropped {
			// A few messages may be lost to a full queue or reported as
			// unreachable while a peer starts; nothing else may drop.
			if reason != bus.DropQueueFull && reason != DropUnknownPeer {
				t.Errorf("node %d dropped %d messages: %s", tn.id, n, reason)
			}
		}
		var sent uint64
		for _, ps := range st.Sent {
			sent += ps.Messages
		}
		if sent == 0 {
			t.Errorf("node %d sent nothing", tn.id)
		}
	}
	// The metrics mirror Stats.
	lead := c.leader()
	var peer uint64
	for id := range lead.bridge.Stats().Sent {
		peer = id
	}
	got := metricValue(t, lead.bridge.meter.prom.sentMsgs.WithLabelValues(peerLabel(peer)))
	if got == 0 {
		t.Errorf("raftbus_transport_sent_messages_total{peer=%q} is 0", peerLabel(peer))
	}
	fams := gathered(t, lead.reg)
	for _, name := range []string{
		"raftbus_transport_sent_messages_total", "raftbus_transport_sent_bytes_total",
		"raftbus_transport_received_messages_total", "raftbus_transport_received_bytes_total",
	} {
		if fams[name] == nil {
			t.Errorf("metric %s not gathered", name)
		}
	}
}

func TestClusterSurvivesLossDuplicationReordering(t *testing.T) {
	c := newTestCluster(t, 3, clusterOpts{seed: 2})
	c.net.SetDropRate(0.10)
	c.net.SetDuplicateRate(0.05)
	c.net.SetReorderRate(0.20)
	c.net.SetDelay(0, 2*time.Millisecond)
	c.propose(values("f", 1000))
	c.assertSameLog()
	var faults uint64
	for _, tn := range c.all() {
		faults += tn.mbus.Stats().Dropped[bus.DropPartitioned]
	}
	if faults == 0 {
		t.Fatal("the network injected no losses; the test proves nothing")
	}
}

func TestStalledDestinationDropsWithoutBlocking(t *testing.T) {
	const maxPayloads, maxBytes = 32, 1 << 20
	c := newTestCluster(t, 3, clusterOpts{seed: 3, busConfig: func(cfg *membus.Config) {
		cfg.MaxQueuePayloads, cfg.MaxQueueBytes = maxPayloads, maxBytes
	}})
	c.propose(values("warm", 10))
	lead := c.leader()
	var stalled *testNode
	for _, tn := range c.all() {
		if tn != lead {
			stalled = tn
			break
		}
	}
	c.net.Stall(stalled.inc)
	// The leader keeps committing with the other follower: its raft loop,
	// which calls Send, is never held up by the stalled peer.
	var others []*testNode
	for _, tn := range c.all() {
		if tn != stalled {
			others = append(others, tn)
		}
	}
	waitFor(t, testWait, "queue_full drops toward the stalled follower", func() bool {
		c.propose(values("during-stall-"+time.Now().Format("150405.000000"), 20), others...)
		return lead.bridge.Stats().Dropped[bus.DropQueueFull] > 0
	})
	st := lead.bridge.Stats()
	if st.Unreachable[stalled.id] == 0 {
		t.Errorf("no ReportUnreachable(%d) after queue_full drops", stalled.id)
	}
	q := lead.mbus.Stats().Queues[stalled.inc]
	if q.Payloads > maxPayloads || q.Bytes > maxBytes {
		t.Errorf("queue toward the stalled follower holds %d payloads / %d bytes, bound %d / %d", q.Payloads, q.Bytes, maxPayloads, maxBytes)
	}
	if got := st.Queues[stalled.id]; got.Payloads == 0 {
		t.Errorf("Stats().Queues[%d] = %+v while the bus queue holds %+v", stalled.id, got, q)
	}
	fam := gathered(t, lead.reg)["raftbus_transport_send_queue_payloads"]
	if fam == nil {
		t.Error("raftbus_transport_send_queue_payloads not gathered")
	} else {
		found := false
		for _, m := range fam.GetMetric() {
			if m.GetLabel()[0].GetValue() == peerLabel(stalled.id) && m.GetGauge().GetValue() > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("no send queue depth reported for peer %s: %v", peerLabel(stalled.id), fam)
		}
	}
	if got := metricValue(t, lead.bridge.meter.prom.dropped.WithLabelValues(string(bus.DropQueueFull))); got == 0 {
		t.Error(`raftbus_transport_dropped_messages_total{reason="queue_full"} is 0`)
	}
	c.net.Unstall(stalled.inc)
	c.propose(values("after-stall", 20))
	c.assertSameLog()
}

func TestConfigValidation(t *testing.T) {
	good := func() Config {
		return Config{
			Cluster: uuid.Must(uuid.NewV7()), ID: 1, Incarnation: uuid.Must(uuid.NewV7()),
			Bus: discardBus{}, Directory: NewMemDirectory(), Raft: nopRaft{},
		}
	}
	tests := map[string]func(*Config){
		"nil cluster":        func(c *Config) { c.Cluster = uuid.Nil },
		"nil incarnation":    func(c *Config) { c.Incarnation = uuid.Nil },
		"zero id":            func(c *Config) { c.ID = 0 },
		"local target id":    func(c *Config) { c.ID = ^uint64(0) },
		"no bus":             func(c *Config) { c.Bus = nil },
		"no directory":       func(c *Config) { c.Directory = nil },
		"no raft":            func(c *Config) { c.Raft = nil },
		"tiny envelopes":     func(c *Config) { c.MaxEnvelopeBytes = 100 },
		"negative timeout":   func(c *Config) { c.ProcessTimeout = -time.Second },
		"negative window":    func(c *Config) { c.SnapshotWindow = -1 },
		"negative snap size": func(c *Config) { c.MaxSnapshotBytes = -1 },
		"resend >= timeout":  func(c *Config) { c.SnapshotTimeout, c.SnapshotResendInterval = time.Second, time.Second },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := good()
			mutate(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
	cfg := good()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxEnvelopeBytes != DefaultMaxEnvelopeBytes || cfg.ProcessTimeout != DefaultProcessTimeout ||
		cfg.SnapshotResendInterval != DefaultSnapshotResendInterval || cfg.Logger == nil {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
}

func TestLifecycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := newRecordingRaft()
	cfg := Config{
		Cluster: uuid.Must(uuid.NewV7()), ID: 1, Incarnation: uuid.Must(uuid.NewV7()),
		Bus: discardBus{}, Directory: NewMemDirectory(), Raft: r, Registerer: reg,
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil {
		t.Fatal("a second bridge registered the same metrics")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	// Unknown destination: dropped, counted, reported.
	b.Send([]*raftpb.Message{heartbeat(1, 7), {Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(7)}})
	waitFor(t, testWait, "reports for the unknown peer", func() bool {
		return r.unreachableCount(7) > 0 && len(r.snapshotStatuses(7)) > 0
	})
	if got := b.Stats().Dropped[DropUnknownPeer]; got != 2 {
		t.Fatalf("unknown_peer drops %d, want 2", got)
	}
	// Raft-local messages never travel and are not reported.
	b.Send([]*raftpb.Message{heartbeat(1, 1), {Type: raftpb.MsgHup.Enum(), To: proto.Uint64(2)}, heartbeat(1, 0)})
	if got := b.Stats().Dropped[DropLocalMessage]; got != 3 {
		t.Fatalf("local_message drops %d, want 3", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	b.Send([]*raftpb.Message{heartbeat(1, 2)}) // must not panic or block
	if got := b.Stats().Dropped[DropBridgeClosed]; got != 1 {
		t.Fatalf("closed drops %d, want 1", got)
	}
	// Close unregistered the metrics: a new bridge can register again.
	b2, err := New(cfg)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	b2.Close()
}

func TestSendSplitsLargeBatches(t *testing.T) {
	net := membus.NewNetwork(4)
	t.Cleanup(net.Close)
	cluster := uuid.Must(uuid.NewV7())
	incA, incB := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	busA, _ := net.NewBus(membus.Config{Cluster: cluster, Self: incA})
	busB, _ := net.NewBus(membus.Config{Cluster: cluster, Self: incB})
	dirA, dirB := NewMemDirectory(), NewMemDirectory()
	for _, d := range []*MemDirectory{dirA, dirB} {
		d.Set(1, incA)
		d.Set(2, incB)
	}
	rb := newRecordingRaft()
	a, err := New(Config{Cluster: cluster, ID: 1, Incarnation: incA, Bus: busA, Directory: dirA, Raft: nopRaft{}, MaxEnvelopeBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Cluster: cluster, ID: 2, Incarnation: incB, Bus: busB, Directory: dirB, Raft: rb})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Bridge{a, b} {
		t.Cleanup(func() { x.Close() })
		if err := x.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// 40 MsgApps of ~1 KiB: about ten envelopes of at most 4 KiB.
	var msgs []*raftpb.Message
	for range 40 {
		msgs = append(msgs, msgApp(1, 2, 8, 128))
	}
	a.Send(msgs)
	waitFor(t, testWait, "all 40 messages", func() bool { return rb.processedCount() == 40 })
	for i, m := range rb.processedMessages() {
		if !proto.Equal(m, msgs[i]) {
			t.Fatalf("message %d arrived changed or out of order", i)
		}
	}
	st := a.Stats()
	if st.Sent[2].Messages != 40 || st.Sent[2].Bytes < 40*1024 {
		t.Fatalf("sent stats %+v", st.Sent[2])
	}
	if frames := busA.Stats().SentPayloads; frames < 10 {
		t.Fatalf("%d envelopes, want the batch split into at least 10", frames)
	}
}

// blockingRaft's reports wait until released, as a raft.Node's do while its
// loop is busy.
type blockingRaft struct {
	*recordingRaft
	release chan struct{}
}

func (r *blockingRaft) ReportUnreachable(id uint64) {
	<-r.release
	r.recordingRaft.ReportUnreachable(id)
}

func TestSendNeverWaitsForRaft(t *testing.T) {
	r := &blockingRaft{recordingRaft: newRecordingRaft(), release: make(chan struct{})}
	b, err := New(Config{
		Cluster: uuid.Must(uuid.NewV7()), ID: 1, Incarnation: uuid.Must(uuid.NewV7()),
		Bus: discardBus{}, Directory: NewMemDirectory(), Raft: r,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	// Raft is stuck in a report; Send must still return, every time.
	for range 100 {
		b.Send([]*raftpb.Message{heartbeat(1, 7), heartbeat(1, 8)})
	}
	if got := b.Stats().Dropped[DropUnknownPeer]; got != 200 {
		t.Fatalf("unknown_peer drops %d, want 200", got)
	}
	close(r.release)
	// Reports were coalesced per peer while Raft was stuck.
	waitFor(t, testWait, "the reports", func() bool {
		return r.unreachableCount(7) > 0 && r.unreachableCount(8) > 0
	})
	if n := r.unreachableCount(7); n > 2 {
		t.Errorf("%d reports for peer 7, want them coalesced", n)
	}
	b.Close()
}
