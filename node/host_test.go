package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/internal/wire"
	"github.com/raftbus/raftbus/raftbridge"
)

// A multiHarness runs hosts × groups: every host holds a member of every
// group, with Raft ID host+1 in each, over one membus network. Hosts tick
// only when the test ticks them (tickAll), with the wall clock's time so
// that the hosts' liveness (which records wall time) agrees with it.
type multiHarness struct {
	t       *testing.T
	cluster uuid.UUID
	net     *membus.Network
	hosts   []*mhost
	groups  int
	// tune adjusts every node's config before it starts.
	tune func(*Config)
}

type mhost struct {
	m      Member // incarnation and Raft ID (the same in every group)
	bus    bus.Bus
	bridge *raftbridge.Host
	host   *Host
	clock  chan time.Time
	nodes  []*Node // by group
	sms    []*mapSM
	stores []*MemoryStorage
	down   bool
}

func newMultiHarness(t *testing.T, hosts, groups int) *multiHarness {
	return newMultiHarnessTuned(t, hosts, groups, nil)
}

func newMultiHarnessTuned(t *testing.T, hosts, groups int, tune func(*Config)) *multiHarness {
	h := &multiHarness{t: t, cluster: uuid.New(), net: membus.NewNetwork(1), groups: groups, tune: tune}
	t.Cleanup(h.net.Close)
	peers := make([]Member, hosts)
	for i := range peers {
		peers[i] = newMember(t, uint64(i+1))
	}
	for _, p := range peers {
		h.hosts = append(h.hosts, h.startHost(p, peers))
	}
	return h
}

func (h *multiHarness) startHost(m Member, peers []Member) *mhost {
	t := h.t
	b, err := h.net.NewBus(membus.Config{Cluster: h.cluster, Self: m.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	bh, err := raftbridge.NewHost(raftbridge.HostConfig{Cluster: h.cluster, Incarnation: m.Incarnation, Bus: b,
		CoalesceInterval: 2 * time.Millisecond, Logger: testLogger(t).With("host", m.Name)})
	if err != nil {
		t.Fatal(err)
	}
	mh := &mhost{m: m, bus: b, bridge: bh, clock: make(chan time.Time)}
	mh.host, err = NewHost(HostConfig{Bridge: bh, TickInterval: 10 * time.Millisecond,
		Ticker: func() (<-chan time.Time, func()) { return mh.clock, func() {} }})
	if err != nil {
		t.Fatal(err)
	}
	for g := range h.groups {
		mh.nodes, mh.sms, mh.stores = append(mh.nodes, nil), append(mh.sms, nil), append(mh.stores, NewMemoryStorage())
		h.startGroup(mh, g, peers, newMapSM())
	}
	if err := bh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mh.halt)
	return mh
}

// startGroup starts host mh's node of group g from its storage, with sm.
func (h *multiHarness) startGroup(mh *mhost, g int, peers []Member, sm *mapSM) {
	h.t.Helper()
	cfg := Config{
		Cluster: h.cluster, ID: uint64(mh.m.ID), Incarnation: mh.m.Incarnation, Name: mh.m.Name,
		Group: uint64(g), Host: mh.host, Peers: peers, Storage: mh.stores[g], StateMachine: sm,
		Logger: testLogger(h.t).With("node", mh.m.Name, "group", g),
	}
	if h.tune != nil {
		h.tune(&cfg)
	}
	nd, err := New(cfg)
	if err != nil {
		h.t.Fatalf("start %s group %d: %v", mh.m.Name, g, err)
	}
	mh.nodes[g], mh.sms[g] = nd, sm
}

// halt stops the host as a crash would: nodes halted, bus closed.
func (mh *mhost) halt() {
	if mh.down {
		return
	}
	mh.down = true
	for _, n := range mh.nodes {
		n.Halt()
	}
	mh.host.Close()
	_ = mh.bridge.Close()
	_ = mh.bus.Close()
}

// tickAll ticks every running host once.
func (h *multiHarness) tickAll() {
	for _, mh := range h.hosts {
		if !mh.down {
			mh.clock <- time.Now()
		}
	}
}

// until ticks all hosts until cond holds, failing after d.
func (h *multiHarness) until(d time.Duration, what string, cond func() error) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %v", what, err)
		}
		h.tickAll()
		time.Sleep(time.Millisecond) // one tick per millisecond of wall time at most
	}
}

// leaders waits until every group has a leader that all running hosts see.
func (h *multiHarness) leaders() {
	h.until(20*time.Second, "every group elects a leader", func() error {
		for g := range h.groups {
			var lead uint64
			for _, mh := range h.hosts {
				if mh.down {
					continue
				}
				l := mh.nodes[g].Leader()
				if l == 0 || (lead != 0 && l != lead) || !h.running(l) {
					return fmt.Errorf("group %d: host %s sees leader %x", g, mh.m.Name, l)
				}
				lead = l
			}
		}
		return nil
	})
}

func (h *multiHarness) running(id uint64) bool { return !h.hosts[id-1].down }

// put writes k=v in group g through host i and waits until every running
// host applied it, ticking meanwhile.
func (h *multiHarness) put(i, g int, k, v string) {
	h.t.Helper()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for {
			// Raft loses a forwarded proposal across a leader change
			// without telling: an attempt that takes long is made again
			// (the write is idempotent).
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			_, _, err := h.hosts[i].nodes[g].Propose(actx, []byte(k+"="+v))
			acancel()
			if ctx.Err() == nil && (errors.Is(err, ErrNoLeader) || errors.Is(err, ErrProposalDropped) || errors.Is(err, context.DeadlineExceeded)) {
				if errors.Is(err, context.DeadlineExceeded) {
					h.t.Logf("group %d: proposal through host %d timed out, proposing again", g, i+1)
				}
			} else {
				errc <- err
				return
			}
			select {
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var perr error
	done := false
	h.until(20*time.Second, fmt.Sprintf("group %d applies %s=%s", g, k, v), func() error {
		if !done {
			select {
			case perr = <-errc:
				done = true
			default:
				return errors.New("proposal pending")
			}
		}
		if perr != nil {
			h.t.Fatalf("propose in group %d: %v", g, perr)
		}
		for _, mh := range h.hosts {
			if !mh.down && mh.nodes[g].Err() == nil && mh.sms[g].get(k) != v {
				return fmt.Errorf("host %s has %s=%q", mh.m.Name, k, mh.sms[g].get(k))
			}
		}
		return nil
	})
}

// quiescent waits until every group on every running host is quiescent.
func (h *multiHarness) quiescent() {
	h.until(20*time.Second, "all groups quiesce", func() error {
		for _, mh := range h.hosts {
			if st := mh.host.Stats(); !mh.down && st.Quiescent != h.groups {
				return fmt.Errorf("host %s: %d of %d groups quiescent", mh.m.Name, st.Quiescent, st.Groups)
			}
		}
		return nil
	})
}

// groupMessages counts the Raft messages the groups of all running hosts
// sent (host pings are not Raft messages).
func (h *multiHarness) groupMessages() uint64 {
	var n uint64
	for _, mh := range h.hosts {
		if mh.down {
			continue
		}
		for _, nd := range mh.nodes {
			for _, p := range nd.TransportStats().Sent {
				n += p.Messages
			}
		}
	}
	return n
}

func TestHostGroupsReplicateAndQuiesce(t *testing.T) {
	h := newMultiHarness(t, 3, 8)
	h.leaders()
	for g := range h.groups {
		h.put(g%3, g, "k", fmt.Sprint(g))
	}
	h.quiescent()

	// Idle groups send nothing: only host pings travel. Answers to the
	// last heartbeats (a follower steps a plain heartbeat that coalescing
	// delayed past the marked one, and answers it) may still be on their
	// way: wait until no group sent anything for 20 ticks.
	var before uint64
	h.until(10*time.Second, "the quiescent groups fall silent", func() error {
		before = h.groupMessages()
		for range 20 {
			h.tickAll()
		}
		for _, mh := range h.hosts {
			mh.bridge.Flush()
		}
		time.Sleep(5 * time.Millisecond)
		if got := h.groupMessages(); got != before {
			return fmt.Errorf("%d messages in 20 ticks", got-before)
		}
		return nil
	})
	h.quiescent()
	for range 100 {
		h.tickAll()
	}
	for _, mh := range h.hosts {
		mh.bridge.Flush()
	}
	if got := h.groupMessages() - before; got != 0 {
		t.Fatalf("quiescent groups sent %d messages over 100 ticks, want 0", got)
	}
	if h.hosts[0].bridge.Stats().PingsReceived == 0 {
		t.Fatal("no host pings arrived")
	}

	// A write wakes its own group only, through a follower too.
	h.put(1, 5, "k", "again")
	for _, mh := range h.hosts {
		if q := mh.host.Stats().Quiescent; q < h.groups-1 {
			t.Fatalf("host %s: %d groups quiescent after a write to one group, want at least %d", mh.m.Name, q, h.groups-1)
		}
	}
	h.quiescent()
	for _, mh := range h.hosts {
		for g := range h.groups {
			want := fmt.Sprint(g)
			if g == 5 {
				want = "again"
			}
			if got := mh.sms[g].get("k"); got != want {
				t.Fatalf("host %s group %d: k=%q, want %q", mh.m.Name, g, got, want)
			}
		}
	}
}

func TestQuiescentGroupsElectAfterLeaderHostDies(t *testing.T) {
	h := newMultiHarness(t, 3, 6)
	h.leaders()
	for g := range h.groups {
		h.put(0, g, "k", "1")
	}
	h.quiescent()
	// Make sure host 1 leads at least one group, by transferring one.
	g0 := h.hosts[0].nodes[0]
	if l := g0.Leader(); l != 1 {
		h.hosts[l-1].nodes[0].wake(wakeMembership)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- h.hosts[l-1].nodes[0].TransferLeadership(ctx, 1) }()
		h.until(10*time.Second, "leadership of group 0 moves to host 1", func() error {
			if g0.Leader() != 1 {
				return errors.New("not yet")
			}
			return nil
		})
		<-errc
	}
	h.quiescent()

	h.hosts[0].halt()
	// Nothing but the silence of host 1 wakes the groups it led.
	h.leaders()
	for g := range h.groups {
		h.put(1, g, "k", "2")
	}
	woke := 0
	for _, mh := range h.hosts[1:] {
		for _, n := range mh.nodes {
			woke += int(counterValue(n.metrics.wakes.WithLabelValues(wakeLeaderSilent)))
		}
	}
	if woke == 0 {
		t.Fatal("no group woke because its leader's host fell silent")
	}
}

func TestOneGroupsTroubleLeavesTheOthersAlone(t *testing.T) {
	h := newMultiHarness(t, 3, 4)
	h.leaders()
	for g := range h.groups {
		h.put(0, g, "k", "1")
	}
	// Remove host 3 from group 2 only: its node of group 2 stops, its other
	// groups go on, and the other hosts' group 2 goes on without it.
	removed := h.hosts[2].nodes[2]
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := h.hosts[0].nodes[2].ChangeMembership(ctx, MembershipChange{Op: OpRemove, Member: Member{ID: 3}})
		errc <- err
	}()
	h.until(20*time.Second, "host 3 leaves group 2", func() error {
		select {
		case <-removed.Done():
			return nil
		default:
			return errors.New("node of group 2 on host 3 still runs")
		}
	})
	if err := <-errc; err != nil {
		t.Fatalf("remove: %v", err)
	}
	if !errors.Is(removed.Err(), ErrRemoved) {
		t.Fatalf("removed node stopped with %v, want ErrRemoved", removed.Err())
	}
	for g := range h.groups {
		h.put(1, g, "after", "removal")
	}
	for g := range h.groups {
		for i, mh := range h.hosts {
			want := "removal"
			if i == 2 && g == 2 {
				want = ""
			}
			if got := mh.sms[g].get("after"); got != want {
				t.Fatalf("host %s group %d: after=%q, want %q", mh.m.Name, g, got, want)
			}
		}
	}
	// Forged and misrouted traffic is dropped by the host or by the group
	// it names, and no group notices.
	forgerInc := uuid.New()
	forger, err := h.net.NewBus(membus.Config{Cluster: h.cluster, Self: forgerInc})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	target := h.hosts[0].m.Incarnation
	_ = forger.Send(target, bus.KindMsg, []byte("garbage"))
	_ = forger.Send(target, bus.KindMsg, groupEnvelope(t, h.cluster, 99, 7, forgerInc, h.hosts[0].m))
	_ = forger.Send(target, bus.KindMsg, groupEnvelope(t, h.cluster, 1, 7, forgerInc, h.hosts[0].m))
	h.until(10*time.Second, "the host drops the forged payloads", func() error {
		st := h.hosts[0].bridge.Stats()
		if st.Dropped[raftbridge.DropDecode] < 1 || st.Dropped[raftbridge.DropUnknownGroup] < 1 {
			return fmt.Errorf("host drops %v", st.Dropped)
		}
		if d := h.hosts[0].nodes[1].TransportStats().Dropped[raftbridge.DropUnknownSender]; d < 1 {
			return fmt.Errorf("group 1 dropped %d unknown-sender messages", d)
		}
		return nil
	})
	for g := range h.groups {
		h.put(0, g, "after", "forgery")
	}
}

// groupEnvelope is a heartbeat envelope of group from a stranger (Raft ID
// from, the forger's incarnation) to member to.
func groupEnvelope(t *testing.T, cluster uuid.UUID, group, from uint64, forger uuid.UUID, to Member) []byte {
	t.Helper()
	h := wire.Header{Cluster: cluster, Group: group,
		From: wire.Endpoint{ID: from, Incarnation: forger},
		To:   wire.Endpoint{ID: uint64(to.ID), Incarnation: to.Incarnation}}
	m := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(uint64(to.ID)), Term: proto.Uint64(1000)}
	b, err := wire.AppendEnvelope(nil, &h, []*raftpb.Message{m})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A group whose snapshot is stuck on one host (its state machine never
// finishes restoring) stalls there alone: the host's other groups keep
// replicating and applying, and the stuck group catches up once released.
func TestStuckSnapshotInOneGroupLeavesTheOthersAlone(t *testing.T) {
	h := newMultiHarnessTuned(t, 3, 4, func(c *Config) { c.SnapshotEntries, c.CompactionOverhead = 20, 5 })
	h.leaders()
	const stuck = 1
	var victim *mhost
	for _, mh := range h.hosts {
		if mh.nodes[stuck].Leader() != uint64(mh.m.ID) {
			victim = mh
		}
	}
	victim.nodes[stuck].Halt()
	via := int(victim.m.ID) % 3 // another host
	for i := range 60 {
		h.put(via, stuck, fmt.Sprint("k", i), "v")
	}
	h.until(10*time.Second, "the leader of the stuck group compacts its log", func() error {
		for _, mh := range h.hosts {
			if n := mh.nodes[stuck]; mh != victim && n.IsLeader() {
				if first, _ := n.FirstIndex(); first > 10 {
					return nil
				}
			}
		}
		return errors.New("not compacted yet")
	})
	entered, release := make(chan struct{}), make(chan struct{})
	sm := newMapSM()
	sm.restoreHook = func(data []byte) error {
		close(entered)
		<-release
		sm.restoreHook = nil
		return sm.Restore(data)
	}
	h.startGroup(victim, stuck, nil, sm)
	h.until(20*time.Second, "the snapshot reaches the victim and sticks", func() error {
		select {
		case <-entered:
			return nil
		default:
			return errors.New("no restore yet")
		}
	})
	// Every other group goes on, through the victim too.
	for g := range h.groups {
		if g != stuck {
			h.put(int(victim.m.ID-1), g, "during", "stuck")
		}
	}
	close(release)
	h.until(20*time.Second, "the stuck group catches up", func() error {
		if got := victim.sms[stuck].get("k59"); got != "v" {
			return fmt.Errorf("victim has k59=%q", got)
		}
		return nil
	})
}
