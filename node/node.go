package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/internal/nodehook"
	"github.com/raftbus/raftbus/raftbridge"
)

// Node runs one member of a Raft cluster: the etcd raft node, its Ready
// loop, the apply loop feeding the StateMachine, and the transport bridge.
type Node struct {
	cfg       Config
	log       *slog.Logger
	raft      raft.Node
	transport nodehook.Transport
	members   *membership
	metrics   *metrics

	applied *indexWaiter // last index applied to the state machine
	durable *indexWaiter // highest index known durable (commit or snapshot)
	props   *requests[result]
	reads   *requests[uint64]
	reqBase uint64
	reqSeq  atomic.Uint64

	// epoch is this process's proposal session epoch (see doc.go, "Proposal
	// sessions"); firstEpoch is the one it started with. sessions is the
	// replicated table of applied proposals, owned by the apply goroutine.
	epoch      atomic.Uint64
	firstEpoch uint64
	sessions   sessionTable

	// confIndex is the index of the last membership change applied here; a
	// stored snapshot older than it does not describe the membership a
	// peer that needs a snapshot may belong to. snapReq asks the apply
	// loop for a snapshot now (capacity 1: one request at a time).
	confIndex atomic.Uint64
	snapReq   chan struct{}
	// primedTo is the index of the last membership entry primeMembership
	// applied at start (0: none); set before any goroutine starts, read
	// only after. No snapshot is taken below it.
	primedTo uint64
	// failure is why the node stopped itself, if it did (storage or state
	// machine failure); see Err.
	failure atomic.Pointer[error]

	// q is the group's quiescence (Config.Host only).
	q quiescence

	lead     atomic.Uint64
	term     atomic.Uint64
	commit   atomic.Uint64
	isLeader atomic.Bool
	removed  atomic.Bool

	applyc chan applyBatch

	stopOnce sync.Once
	stopc    chan struct{} // closed when Stop begins
	done     chan struct{} // closed when Stop has finished
	loops    sync.WaitGroup
}

// applyBatch is what the Ready loop hands to the apply loop: optionally a
// snapshot to restore first, then committed entries in order.
type applyBatch struct {
	snap    *raftpb.Snapshot
	entries []*raftpb.Entry
}

// New starts a node. With empty storage and Config.Peers it bootstraps a new
// cluster; with existing storage it restarts from it; with neither it waits,
// uninitialised, for the leader of the cluster it was added to.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("component", "node", "raft_id", raftbridge.ID(cfg.ID).String())
	if cfg.Host != nil {
		logger = logger.With("group", cfg.Group)
	}
	n := &Node{
		cfg:     cfg,
		log:     logger,
		members: newMembership(),
		props:   newRequests[result](),
		reads:   newRequests[uint64](),
		applyc:  make(chan applyBatch, applyDepth(cfg)),
		snapReq: make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	// Request IDs double as proposal sequence numbers: keep far below
	// overflow, so a process's sequence numbers only grow.
	n.reqBase = binary.BigEndian.Uint64(b[:]) >> 2
	n.sessions = sessionTable{}
	if cfg.Host != nil {
		n.cfg.Ticker = func() (<-chan time.Time, func()) { return cfg.Host.ticker(n) }
	}

	st := cfg.Storage
	// Read before any goroutine writes: raft.MemoryStorage.InitialState
	// takes no lock.
	hs, confState, err := st.InitialState()
	if err != nil {
		return nil, fmt.Errorf("node: read initial state: %w", err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("node: read snapshot: %w", err)
	}
	last, err := st.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("node: read last index: %w", err)
	}
	restart := !raft.IsEmptyHardState(hs) || last > 0 || !raft.IsEmptySnap(snap)
	snapIndex := snap.GetMetadata().GetIndex()
	if !raft.IsEmptySnap(snap) {
		if err := n.restore(snap); err != nil {
			return nil, err
		}
	}
	n.applied = newIndexWaiter(snapIndex)
	// A new session epoch, above every one recorded for this Raft ID as far
	// as the snapshot tells; the apply loop bumps it further if the log
	// holds a newer one (a clock that went backwards).
	n.firstEpoch = max(uint64(time.Now().UnixNano()), n.sessions.maxEpoch(cfg.ID)+1)
	n.epoch.Store(n.firstEpoch)
	n.durable = newIndexWaiter(max(snapIndex, hs.GetCommit()))
	if restart {
		// Prime the directory with every committed membership change, so the
		// bridge knows members and tombstones before the first delivery. Raft
		// replays the same entries through the apply loop; applying them
		// again is idempotent.
		if err := n.primeMembership(snapIndex, hs.GetCommit()); err != nil {
			return nil, err
		}
	} else if len(cfg.Peers) == 0 {
		n.members.joining = map[uint64]Member{}
		for _, m := range cfg.JoinMembers {
			n.members.joining[uint64(m.ID)] = m
		}
	} else {
		// raft.StartNode commits one ConfChange per peer at indexes 1..n, in
		// this order; settling them here primes the directory identically.
		for i, p := range cfg.Peers {
			cc := &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(uint64(p.ID))}}}
			if err := n.members.decide(uint64(i+1), cc, &confContext{Member: &p}); err != nil {
				return nil, fmt.Errorf("node: bootstrap member %s: %w", raftbridge.ID(p.ID).String(), err)
			}
		}
	}
	n.metrics = newMetrics(groupRegisterer(cfg), n)

	newTransport := cfg.newTransport
	if newTransport == nil {
		newTransport = func(nodehook.Peer) (nodehook.Transport, error) { return n.newBridge() }
	}
	tr, err := newTransport(hookPeer{n})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.transport = tr

	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   &raftStorage{Storage: st, n: n},
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: 64 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		Logger:                    newRaftLogger(cfg.Logger),
	}
	switch {
	case restart:
		n.raft = raft.RestartNode(rc)
	case len(cfg.Peers) > 0:
		peers := make([]raft.Peer, 0, len(cfg.Peers))
		for _, p := range cfg.Peers {
			ctx, err := confChangeContext(0, p)
			if err != nil {
				return nil, err
			}
			peers = append(peers, raft.Peer{ID: uint64(p.ID), Context: ctx})
		}
		n.raft = raft.StartNode(rc, peers)
	default:
		n.raft = raft.RestartNode(rc)
	}
	if err := tr.Start(); err != nil {
		n.raft.Stop()
		_ = tr.Close()
		return nil, fmt.Errorf("node: start transport: %w", err)
	}
	n.loops.Add(2)
	go n.runRaft()
	go n.runApply(confState, snapIndex)
	n.log.Info("node started", "cluster", cfg.Cluster, "incarnation", cfg.Incarnation, "name", cfg.Name,
		"restart", restart, "bootstrap", !restart && len(cfg.Peers) > 0, "snapshot_index", snapIndex)
	return n, nil
}

// applyDepth bounds the batches waiting for the apply loop: 64 for a node
// of its own; 8 for a group of a Host, which may hold a thousand of them
// (the queue is 2 KiB per node at 64, and a group's Readies are small).
func applyDepth(cfg Config) int {
	if cfg.Host != nil {
		return 8
	}
	return 64
}

func confChangeContext(req uint64, m Member) ([]byte, error) {
	return jsonMarshal(confContext{Request: req, Member: &m})
}

// primeMembership applies the committed membership changes in (from, to]
// from storage to the membership state.
func (n *Node) primeMembership(from, to uint64) error {
	for lo := from + 1; lo <= to; {
		ents, err := n.cfg.Storage.Entries(lo, to+1, 4<<20)
		if err != nil {
			return fmt.Errorf("node: read log [%d, %d]: %w", lo, to, err)
		}
		for _, e := range ents {
			if n.primeEntry(e) {
				n.primedTo = e.GetIndex()
			}
			lo = e.GetIndex() + 1
		}
		if len(ents) == 0 {
			break
		}
	}
	return nil
}

// primeEntry applies e to the directory if it is a membership entry: a
// ConfChange or a system entry (rejections and stream bindings decide
// requests too, so skipping them would let a later change of the same
// request take effect here and not elsewhere). Verdicts are ignored: the
// apply loop reaches the same ones.
func (n *Node) primeEntry(e *raftpb.Entry) bool {
	if cc, ctx, ok := decodeConfChange(e); ok {
		_ = n.members.decide(e.GetIndex(), cc, ctx)
		return true
	}
	if e.GetType() != raftpb.EntryNormal {
		return false
	}
	// decodeEntry refuses empty entries and session proposals.
	tag, _, body, err := decodeEntry(e.GetData())
	if err != nil || tag != entryTagSystem {
		return false
	}
	cmd, err := decodeSystem(e.GetIndex(), body)
	if err != nil {
		return false
	}
	_ = n.members.system(e.GetIndex(), cmd)
	return true
}

// runRaft is the Ready loop: the only goroutine that ticks Raft, persists
// its output and hands messages to the bridge.
func (n *Node) runRaft() {
	defer n.loops.Done()
	defer close(n.applyc)
	ticks, release := n.cfg.Ticker()
	defer release()
	for {
		select {
		case <-ticks:
			if n.q.isQuiescent() {
				continue // a tick sent before the group quiesced
			}
			n.raft.Tick()
			n.maybeQuiesce()
		case rd := <-n.raft.Ready():
			if err := n.handleReady(rd); err != nil {
				n.fail(fmt.Errorf("%w: %w", ErrStorage, err))
				return
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) handleReady(rd raft.Ready) error {
	if rd.SoftState != nil {
		n.observeSoftState(rd.SoftState)
	}
	if rd.HardState != nil && rd.HardState.Term != nil {
		n.term.Store(rd.HardState.GetTerm())
	}
	for _, rs := range rd.ReadStates {
		if len(rs.RequestCtx) == 8 {
			n.reads.trigger(binary.BigEndian.Uint64(rs.RequestCtx), rs.Index)
		}
	}
	// A leader may send its appends while it writes them itself (Raft
	// thesis §10.2.1); its hard state carries no vote that a message could
	// depend on. Everyone else persists first.
	leader := n.isLeader.Load()
	n.markQuiescing(rd.Messages)
	if leader {
		n.transport.Send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.cfg.Storage.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("apply snapshot at %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
		}
	}
	if err := n.save(rd); err != nil {
		return fmt.Errorf("save %d entries: %w", len(rd.Entries), err)
	}
	// Only now is the Ready durable as a whole: a snapshot's sender is told
	// it is durable (ReceiveSnapshot) after the hard state and entries that
	// go with it are saved too, never between ApplySnapshot and Save.
	if !raft.IsEmptySnap(rd.Snapshot) {
		n.durable.advance(rd.Snapshot.GetMetadata().GetIndex())
	}
	if hs := rd.HardState; hs != nil {
		n.commit.Store(hs.GetCommit())
		n.durable.advance(hs.GetCommit())
	}
	if !leader {
		n.transport.Send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) || len(rd.CommittedEntries) > 0 {
		b := applyBatch{entries: rd.CommittedEntries}
		if !raft.IsEmptySnap(rd.Snapshot) {
			b.snap = rd.Snapshot
		}
		// The apply channel is bounded: if the state machine falls behind,
		// Raft waits here rather than queueing without limit.
		select {
		case n.applyc <- b:
		case <-n.stopc:
			return nil
		}
	}
	n.raft.Advance()
	return nil
}

// save persists a Ready's entries and hard state, without fsync when Raft
// says none is needed (only the commit index moved) and the storage can.
func (n *Node) save(rd raft.Ready) error {
	if cs, ok := n.cfg.Storage.(CommitSaver); ok && !rd.MustSync && len(rd.Entries) == 0 && !raft.IsEmptyHardState(rd.HardState) {
		return cs.SaveCommit(rd.HardState)
	}
	return n.cfg.Storage.Save(rd.HardState, rd.Entries)
}

func (n *Node) observeSoftState(ss *raft.SoftState) {
	old := n.lead.Swap(ss.Lead)
	n.isLeader.Store(ss.RaftState == raft.StateLeader)
	if old != ss.Lead {
		n.metrics.leaderChanges.Inc()
		n.log.Info("leader changed", "leader", raftbridge.ID(ss.Lead).String(), "previous", raftbridge.ID(old).String(), "state", ss.RaftState.String())
	}
}

// Propose replicates data and returns once it is committed and applied on
// this node, with its index and the state machine's result. Followers
// forward proposals to the leader.
func (n *Node) Propose(ctx context.Context, data []byte) (uint64, any, error) {
	if err := n.checkUsable(); err != nil {
		return 0, nil, err
	}
	if len(data) > n.cfg.MaxProposalBytes {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), n.cfg.MaxProposalBytes)
	}
	n.wake(wakeProposal)
	id := n.nextRequestID()
	ch := n.props.register(id)
	n.metrics.pending.Inc()
	defer n.metrics.pending.Dec()
	if err := n.raft.Propose(ctx, encodeProposal(n.cfg.ID, n.epoch.Load(), id, data)); err != nil {
		n.props.cancel(id)
		n.metrics.failed.Inc()
		return 0, nil, n.mapRaftErr(err)
	}
	select {
	case r := <-ch:
		return r.index, r.value, r.err
	case <-ctx.Done():
		n.props.cancel(id)
		n.metrics.failed.Inc()
		return 0, nil, ctx.Err()
	case <-n.stopc:
		n.props.cancel(id)
		return 0, nil, n.stoppedErr()
	}
}

// ReadIndex returns once this node has applied everything committed before
// the call: a linearizable read may then be served from local state.
func (n *Node) ReadIndex(ctx context.Context) error {
	if err := n.checkUsable(); err != nil {
		return err
	}
	n.wake(wakeRead)
	id := n.nextRequestID()
	ch := n.reads.register(id)
	defer n.reads.cancel(id)
	rctx := binary.BigEndian.AppendUint64(nil, id)
	// Raft drops a read request silently across a leader change, so it is
	// re-sent until answered.
	retry := time.NewTicker(10 * n.cfg.TickInterval)
	defer retry.Stop()
	for {
		if err := n.raft.ReadIndex(ctx, rctx); err != nil {
			return n.mapRaftErr(err)
		}
		select {
		case idx := <-ch:
			return n.applied.wait(ctx, idx, n.stopc)
		case <-retry.C:
			if n.lead.Load() == 0 {
				return ErrNoLeader
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return n.stoppedErr()
		}
	}
}

func (n *Node) checkUsable() error {
	select {
	case <-n.stopc:
		return n.stoppedErr()
	default:
	}
	if n.lead.Load() == 0 {
		return ErrNoLeader
	}
	return nil
}

func (n *Node) stoppedErr() error {
	if n.removed.Load() {
		return ErrRemoved
	}
	if f := n.failure.Load(); f != nil {
		return *f
	}
	return ErrStopped
}

// fail stops a node that cannot go on (its storage or state machine
// failed), recording why: the first failure is what Err and every waiting
// caller report. It does not wait for the stop, so the failing loop may
// call it.
func (n *Node) fail(err error) {
	err = fmt.Errorf("%w: %w", ErrStopped, err)
	if n.failure.CompareAndSwap(nil, &err) {
		n.log.Error("node failed and stops", "err", err)
	}
	go n.Stop()
}

func (n *Node) mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrProposalDropped):
		return ErrProposalDropped
	case errors.Is(err, raft.ErrStopped):
		return n.stoppedErr()
	}
	return err
}

func (n *Node) nextRequestID() uint64 { return n.reqBase + n.reqSeq.Add(1) }

// Process implements raftbridge.Raft. A message that would make Raft
// panic (see checkInbound) is refused with ErrInvalidMessage, which the
// bridge counts as a drop.
func (n *Node) Process(ctx context.Context, m *raftpb.Message) error {
	if err := n.checkInbound(m); err != nil {
		return err
	}
	quiescing := n.wakeOn(m)
	if err := n.raft.Step(ctx, m); err != nil {
		return err
	}
	if quiescing {
		n.followerQuiesce(m)
	}
	return nil
}

// ReportUnreachable implements raftbridge.Raft.
func (n *Node) ReportUnreachable(id uint64) { n.raft.ReportUnreachable(id) }

// ReportSnapshot implements raftbridge.Raft.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.wake(wakeMessage)
	n.raft.ReportSnapshot(id, status)
}

// ReceiveSnapshot implements raftbridge.SnapshotReceiver: it steps the
// snapshot into Raft and returns only once it is durable here (or Raft
// already holds everything it covers), so the sender's SnapshotFinish means
// the snapshot survives a crash of this node.
func (n *Node) ReceiveSnapshot(ctx context.Context, m *raftpb.Message) error {
	idx := m.GetSnapshot().GetMetadata().GetIndex()
	if err := checkSnapshot(m); err != nil {
		return err
	}
	n.wake(wakeMessage)
	if err := n.raft.Step(ctx, m); err != nil {
		return n.mapRaftErr(err)
	}
	return n.durable.wait(ctx, idx, n.stopc)
}

// Stop stops the node: a leader first hands leadership to another voter
// (bounded by StopTransferTimeout), then the loops stop and Stop waits for
// them. Stop is idempotent and safe to call concurrently.
func (n *Node) Stop() { n.stop(true) }

// Halt stops the node without handing leadership over: for when the whole
// cluster stops at once, and to simulate a crash in tests. Everything Raft
// acknowledged is already durable, so a node restarted from the same
// storage loses nothing.
func (n *Node) Halt() { n.stop(false) }

func (n *Node) stop(graceful bool) {
	n.stopOnce.Do(func() {
		if graceful && !n.removed.Load() {
			n.transferLeadership()
		}
		close(n.stopc)
		_ = n.transport.Close()
		n.raft.Stop()
		n.loops.Wait()
		n.metrics.unregister()
		n.log.Info("node stopped")
		close(n.done)
	})
	<-n.done
}

// Done is closed once the node has stopped, whether by Stop, by learning
// that it was removed, or by a storage failure.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped, nil while it runs: ErrRemoved when it
// was removed from the cluster; an error matching both ErrStopped and
// ErrStorage or ErrStateMachine (with the cause) when it stopped itself
// because its storage or its state machine failed; ErrStopped otherwise.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.stoppedErr()
	default:
		return nil
	}
}

func (n *Node) transferLeadership() {
	if !n.isLeader.Load() {
		return
	}
	best := n.BestTransferee()
	if best == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StopTransferTimeout)
	defer cancel()
	n.log.Info("transferring leadership before stop", "to", raftbridge.ID(best).String())
	if err := n.TransferLeadership(ctx, best); err != nil {
		n.log.Warn("leadership transfer did not finish", "to", raftbridge.ID(best).String(), "err", err)
	}
}
