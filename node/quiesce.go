package node

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// quiesceMarker is the context of a leader's last heartbeats before its
// group quiesces. Read-index contexts are 8 bytes, so they never collide
// with it; the receiving node strips it before Raft sees the heartbeat, and
// a stray one that reached a leader's Raft would match no pending read.
var quiesceMarker = []byte("raftbus/quiesce")

// Quiescence states.
const (
	qAwake     int32 = iota
	qQuiescing       // a leader's next heartbeats carry the marker
	qQuiescent       // no ticks until woken
)

// Why a quiescent group woke up (log and metric label values).
const (
	wakeProposal     = "proposal"
	wakeRead         = "read"
	wakeMessage      = "message"
	wakeLeaderSilent = "leader_silent"
	wakeMembership   = "membership"
)

// quiescence is a node's quiescence state. state is read lock-free on
// every proposal and inbound message; transitions take mu, so that a wake
// never loses against a concurrent decision to quiesce.
//
// Only a group of a Host quiesces (Config.Host): a node of its own never
// leaves qAwake, whatever its peers send.
type quiescence struct {
	state atomic.Int32
	mu    sync.Mutex
	// idle counts consecutive idle ticks of a leader; raft loop only.
	idle int
	// leader and term are the Raft ID and term a quiescent node was
	// quiesced under.
	leader atomic.Uint64
	term   atomic.Uint64
}

func (q *quiescence) isQuiescent() bool { return q.state.Load() == qQuiescent }

// wake makes the group tick again. A follower that wakes because its
// leader's host fell silent also proposes an empty entry, which wakes the
// leader if it is alive after all (CockroachDB's rule): proposals, reads
// and membership changes reach the leader by themselves.
func (n *Node) wake(reason string) {
	q := &n.q
	if q.state.Load() == qAwake {
		return
	}
	q.mu.Lock()
	was := q.state.Swap(qAwake)
	q.mu.Unlock()
	if was != qQuiescent {
		return
	}
	n.metrics.wakes.WithLabelValues(reason).Inc()
	if reason == wakeLeaderSilent {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.TickInterval*time.Duration(n.cfg.ElectionTicks))
			defer cancel()
			_ = n.raft.Propose(ctx, nil) // an empty entry: applied as a no-op
		}()
	}
}

// wakeOn wakes the group for an inbound message that brings work. It
// reports a leader's quiescing heartbeat, which a follower steps as it is
// (Raft echoes the marker in its response). Heartbeat responses never wake
// a leader, and a quiescent follower is not woken by a plain heartbeat of
// the leader and term it quiesced under: both carry nothing new, and
// coalescing may deliver them after the quiescing round, which would
// otherwise wake the group again at once, forever.
func (n *Node) wakeOn(m *raftpb.Message) (quiescing bool) {
	q := &n.q
	if n.cfg.Host == nil {
		return false
	}
	marked := bytes.Equal(m.GetContext(), quiesceMarker)
	switch t := m.GetType(); {
	case t == raftpb.MsgHeartbeat && marked:
		return true
	case t == raftpb.MsgHeartbeatResp:
		if marked {
			m.Context = nil // no read is pending under it
		}
		return false
	case q.state.Load() == qAwake:
		return false
	case t == raftpb.MsgHeartbeat && len(m.GetContext()) == 0 && m.GetFrom() == q.leader.Load() && m.GetTerm() == q.term.Load():
		return false
	}
	n.wake(wakeMessage)
	return false
}

// maybeQuiesce runs on the raft loop after every tick of a leader: after
// QuiesceTicks idle ticks, the next heartbeats carry the marker and the
// leader stops ticking.
func (n *Node) maybeQuiesce() {
	q := &n.q
	if n.cfg.Host == nil || n.cfg.Host.cfg.QuiesceTicks < 0 || !n.isLeader.Load() || !n.idleLeader() {
		q.idle = 0
		if q.state.Load() == qQuiescing { // leadership or work came first
			q.mu.Lock()
			q.state.CompareAndSwap(qQuiescing, qAwake)
			q.mu.Unlock()
		}
		return
	}
	q.idle++
	if q.idle < n.cfg.Host.cfg.QuiesceTicks {
		return
	}
	q.mu.Lock()
	q.state.CompareAndSwap(qAwake, qQuiescing)
	q.mu.Unlock()
}

// idleLeader reports whether a leader has nothing in flight: every
// follower has acknowledged the whole log in steady replication, the log
// is committed and applied, and no proposal or read waits.
func (n *Node) idleLeader() bool {
	if n.props.count() > 0 || n.reads.count() > 0 {
		return false
	}
	st := n.raft.Status()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None || n.applied.current() != st.GetCommit() {
		return false
	}
	for id, pr := range st.Progress {
		if pr.Match != st.GetCommit() || (id != n.cfg.ID && (pr.State != tracker.StateReplicate || pr.IsPaused())) {
			return false
		}
	}
	return true
}

// markQuiescing puts the marker on a quiescing leader's heartbeats, on
// the raft loop just before they are sent; once they are marked the
// leader is quiescent.
func (n *Node) markQuiescing(msgs []*raftpb.Message) {
	q := &n.q
	if q.state.Load() != qQuiescing {
		return
	}
	marked := false
	for _, m := range msgs {
		switch m.GetType() {
		case raftpb.MsgHeartbeat:
			if len(m.GetContext()) == 0 {
				m.Context = quiesceMarker
				marked = true
			}
		case raftpb.MsgApp, raftpb.MsgSnap:
			// Work appeared after all: stay awake.
			q.mu.Lock()
			q.state.CompareAndSwap(qQuiescing, qAwake)
			q.mu.Unlock()
			return
		}
	}
	if marked {
		q.mu.Lock()
		if q.state.CompareAndSwap(qQuiescing, qQuiescent) {
			q.leader.Store(n.cfg.ID)
			q.term.Store(n.term.Load())
		}
		q.mu.Unlock()
	}
}

// followerQuiesce runs after a follower stepped its leader's quiescing
// heartbeat: it quiesces if it agrees with the leader on leader, term and
// commit, and holds nothing beyond the commit index and nothing unapplied.
// Otherwise it stays awake, and its election timer will wake the leader
// if the leader really went quiet.
func (n *Node) followerQuiesce(m *raftpb.Message) {
	st := n.raft.Status()
	last, err := n.cfg.Storage.LastIndex()
	if err != nil || st.RaftState != raft.StateFollower || st.Lead != m.GetFrom() || st.GetTerm() != m.GetTerm() ||
		st.GetCommit() != m.GetCommit() || last != st.GetCommit() || n.applied.current() != st.GetCommit() {
		return
	}
	q := &n.q
	q.mu.Lock()
	if q.state.CompareAndSwap(qAwake, qQuiescent) {
		q.leader.Store(st.Lead)
		q.term.Store(st.GetTerm())
	}
	q.mu.Unlock()
}

// quiescentLeader is the incarnation of the leader a quiescent follower
// waits for; ok is false for a quiescent leader.
func (n *Node) quiescentLeader() (uuid.UUID, bool) {
	lead := n.q.leader.Load()
	if lead == n.cfg.ID || lead == raft.None {
		return uuid.Nil, false
	}
	return n.members.Incarnation(lead)
}
