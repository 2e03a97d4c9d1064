package node

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/raftbridge"
)

// HostConfig configures a Host.
type HostConfig struct {
	// Bridge carries every group's traffic: one incarnation, one bus.
	// Required; the host does not start or close it.
	Bridge *raftbridge.Host
	// TickInterval is the Raft tick of every group. Default 100ms.
	TickInterval time.Duration
	// ElectionTicks is every group's election timeout in ticks; a quiescent
	// follower whose leader's host was not heard from for this long wakes
	// up (and elects a new leader if it must). Default 10.
	ElectionTicks int
	// QuiesceTicks is how many ticks a leader's group must be idle (all
	// followers caught up, everything applied, nothing pending) before it
	// quiesces. Default 3. Negative: groups never quiesce.
	QuiesceTicks int
	// Ticker, when set, is the host's tick source instead of the wall clock
	// (tests drive time by hand). Default: a time.Ticker every
	// TickInterval.
	Ticker func() (<-chan time.Time, func())
	// Logger receives the host's logs. Default: discard.
	Logger *slog.Logger
}

func (c *HostConfig) validate() error {
	if c.Bridge == nil {
		return errors.New("node: invalid host config: a raftbridge.Host is required")
	}
	setDefault(&c.TickInterval, 100*time.Millisecond)
	setDefault(&c.ElectionTicks, 10)
	setDefault(&c.QuiesceTicks, 3)
	if c.TickInterval < time.Millisecond || c.ElectionTicks < 2 {
		return fmt.Errorf("node: invalid host config: tick %v (at least 1ms), election ticks %d (at least 2)", c.TickInterval, c.ElectionTicks)
	}
	if c.Ticker == nil {
		c.Ticker = wallTicker(c.TickInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Host runs the nodes of many Raft groups in one process: one incarnation,
// one bus (through a raftbridge.Host) and one tick for all of them.
// Start a group's node with node.New and Config.Host set to the host.
//
// A group whose leader sees nothing to do quiesces: its leader sends one
// last round of heartbeats marked as quiescing and stops ticking, and each
// follower that agrees (same leader, term and commit, nothing unapplied)
// stops ticking too. A quiescent group costs no ticks and no messages. Any
// proposal, read, membership change or message wakes it; a quiescent
// follower whose leader's host falls silent for an election timeout wakes
// and, if the leader is gone, elects another. Between hosts, the host
// sends one ping per peer host every third of an election timeout
// (raftbridge.Host.Ping), whatever the number of groups. See doc.go,
// "Many groups per host", for the rules and why they keep leadership safe.
type Host struct {
	cfg HostConfig
	log *slog.Logger

	mu    sync.Mutex
	nodes map[*Node]chan time.Time
	// peers are the peer hosts of the last ping round (tick loop only).
	peers []uuid.UUID

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewHost starts a host's tick loop.
func NewHost(cfg HostConfig) (*Host, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &Host{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "node_host"),
		nodes: make(map[*Node]chan time.Time),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go h.run()
	return h, nil
}

// Close stops the tick loop and waits for it. Stop the host's nodes
// first: they no longer tick afterwards. Close is idempotent.
func (h *Host) Close() {
	h.once.Do(func() { close(h.stop) })
	<-h.done
}

// HostStats counts a host's groups.
type HostStats struct {
	Groups    int // nodes running on the host
	Quiescent int // of which quiescent
}

// Stats returns the host's group counts.
func (h *Host) Stats() HostStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HostStats{Groups: len(h.nodes)}
	for n := range h.nodes {
		if n.q.isQuiescent() {
			st.Quiescent++
		}
	}
	return st
}

// ticker registers n and returns its tick channel and release.
func (h *Host) ticker(n *Node) (<-chan time.Time, func()) {
	c := make(chan time.Time, 1)
	h.mu.Lock()
	h.nodes[n] = c
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(h.nodes, n)
		h.mu.Unlock()
	}
}

func (h *Host) run() {
	defer close(h.done)
	ticks, release := h.cfg.Ticker()
	defer release()
	pingEvery := max(1, h.cfg.ElectionTicks/3)
	for tick := 0; ; tick++ {
		select {
		case now := <-ticks:
			h.tick(now)
			if tick%pingEvery == 0 {
				h.ping()
			}
		case <-h.stop:
			return
		}
	}
}

// tick hands a tick to every awake node and wakes quiescent followers
// whose leader's host fell silent.
func (h *Host) tick(now time.Time) {
	silent := h.silentPeers(now)
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, c := range h.nodes {
		if n.q.isQuiescent() {
			if len(silent) > 0 {
				if inc, ok := n.quiescentLeader(); ok && silent[inc] {
					n.wake(wakeLeaderSilent)
				}
			}
			continue
		}
		select {
		case c <- now:
		default: // the node is busy; a lost tick only slows its timers
		}
	}
}

// silentPeers returns the peer hosts nothing came from for an election
// timeout, nil when there are none: one look per peer host and tick, not
// one per group.
func (h *Host) silentPeers(now time.Time) map[uuid.UUID]bool {
	silence := time.Duration(h.cfg.ElectionTicks) * h.cfg.TickInterval
	var out map[uuid.UUID]bool
	for _, p := range h.peers {
		if last, ok := h.cfg.Bridge.LastHeard(p); !ok || now.Sub(last) > silence {
			if out == nil {
				out = make(map[uuid.UUID]bool)
			}
			out[p] = true
		}
	}
	return out
}

// ping tells every peer host of every group that this host is alive.
func (h *Host) ping() {
	seen := map[uuid.UUID]struct{}{}
	var peers []uuid.UUID
	h.mu.Lock()
	for n := range h.nodes {
		peers = n.members.peerIncarnations(n.cfg.Incarnation, seen, peers)
	}
	h.mu.Unlock()
	h.peers = peers
	h.cfg.Bridge.Track(peers)
	h.cfg.Bridge.Ping()
}
