package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/raftbridge"
)

// Cluster is what the manager needs from the local node runtime. The node
// runtime implements it; the manager never touches Raft itself.
type Cluster interface {
	// Self returns this node's Raft ID and incarnation.
	Self() (HexID, uuid.UUID)
	// Leader returns the Raft ID of the known leader, 0 if none.
	Leader() HexID
	// State returns the replicated membership as applied here.
	State() State
	// Barrier waits until everything committed before the call is applied
	// here (a ReadIndex round), so that State shows every decision made by
	// earlier leaders.
	Barrier(ctx context.Context) error
	// Change proposes the change d and waits until Raft has decided it: it
	// returns the deciding index, a *RejectionError when the change was
	// rejected when applied (a decided fact too), ErrAlreadySettled when
	// the request had been decided before, and any other error when
	// nothing is known to be decided (the caller retries the same
	// request: it is de-duplicated by ID).
	Change(ctx context.Context, d Decision) (index uint64, err error)
	// Reject records through Raft that the request d.RequestID is rejected
	// with code and reason, unless it was decided already (then
	// ErrAlreadySettled, and the first decision stands).
	Reject(ctx context.Context, d Decision, code, reason string) (index uint64, err error)
	// Bind records the stream in replicated state.
	Bind(ctx context.Context, name string, created time.Time) error
	// Rebind replaces the binding with the stream name created at
	// created, deciding the repair request d (OpRepairStream); the
	// decided stream sequence starts again at 0, on the new stream.
	Rebind(ctx context.Context, d Decision, name string, created time.Time) (index uint64, err error)
	// TransferLeadership hands leadership to the best other voter.
	TransferLeadership(ctx context.Context) error
	// CaughtUp reports whether a member's log is close to the commit index.
	CaughtUp(id HexID) bool
	// Removed stops the node: the stream recorded its removal. In a
	// group other than 0 it is the host's member of that group that was
	// removed: the host leaves that group only.
	Removed(reason string)
}

// Decision is a request as the leader puts it to Raft.
type Decision struct {
	RequestID string
	Op        string
	// Member: for adds the whole member (its ID allocated by the leader),
	// for promote and remove the ID.
	Member Member
	// Seq is the request's stream sequence; deciding the request records
	// it (State.DecidedSeq).
	Seq uint64
	// ExpectVersion, when not 0, is checked against State.Version when
	// the change is applied (CodeConflict).
	ExpectVersion uint64
}

// State is the replicated membership a Cluster reports, read at once
// (never a torn view): the one membership model, shared with the node
// runtime (node.MembershipState). State.Version is the index of the last
// change that took effect, the number committed records carry.
type State = raftbridge.Membership

// Settled is one entry of the replicated history: a change that took
// effect, or a request that was rejected (Rejected, Code).
type Settled = raftbridge.Settled

// committedOf is the committed record of a change that took effect.
func committedOf(h Settled) Committed {
	return Committed{Index: h.Index, Op: h.Op, Member: h.Member, RequestID: h.RequestID, Version: h.Index}
}

// RejectionError is returned by Cluster.Change for a rejected change.
type RejectionError struct {
	Code   string
	Reason string
}

func (e *RejectionError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectionError) Is(target error) bool { return target == ErrRejected }

// ManagerConfig configures a Manager. A node with many Raft groups runs
// one Manager per group, each with Stream.Group set to its group and
// Cluster that group's node; they share the stream, the incarnation and
// the Signer.
type ManagerConfig struct {
	// Stream names the cluster's stream; Stream.Group is the Raft group
	// this manager serves (0: the default group): it reads and decides
	// only that group's requests and writes that group's outcomes and
	// committed records.
	Stream StreamConfig
	// Cluster is the local node of Stream.Group's Raft group. Required.
	Cluster Cluster
	// Announce is this node's announcement, published at start unless
	// SkipAnnounce. In a group other than 0 its Raft ID is left out: an
	// announcement is the host's, and Raft IDs are per group.
	Announce Announce
	// SkipAnnounce: this manager does not announce the host. Every group
	// reads the host's announcements from the same subject, so of the
	// managers of one host only one (normally group 0's) needs to.
	SkipAnnounce bool
	// Poll is how often leadership and the stream are checked. Default 200ms.
	Poll time.Duration
	// PromoteWait bounds how long a promote request waits for the learner
	// to catch up, while no other request is pending, before it is
	// rejected as not ready. Default 2s, well within the default --timeout
	// of `raftbus member` (5s).
	PromoteWait time.Duration
	// Signer is this incarnation's nkey (datadir.LoadKey). Required: every
	// record the manager writes is signed with it, on subjects ending in
	// this node's incarnation (Stream.Incarnation and Signer are set from
	// it and Cluster.Self).
	Signer nkeys.KeyPair
	// Logger receives the manager's logs. Default: discard.
	Logger *slog.Logger
}

// Manager runs the membership side of a node: it announces the node, stops
// it when the stream records its removal, and while the node leads, turns
// operator requests into Raft membership changes and records their outcome
// and every committed change in the stream.
type Manager struct {
	cfg  ManagerConfig
	log  *slog.Logger
	self HexID
	inc  uuid.UUID

	mu       sync.Mutex
	problem  string         // why membership operations are stopped, if they are
	rejected map[string]int // committed records skipped by the follower, by reason
	logged   uint64         // highest sequence whose rejection was logged

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartManager starts a manager; Stop ends it.
func StartManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.Stream.validate(); err != nil {
		return nil, err
	}
	if cfg.Cluster == nil {
		return nil, errors.New("membership: a cluster is required")
	}
	if cfg.Signer == nil {
		return nil, fmt.Errorf("%w: ManagerConfig.Signer is required", ErrNoSigner)
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.PromoteWait == 0 {
		cfg.PromoteWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("component", "membership")
	if cfg.Stream.Group != 0 {
		log = log.With("group", cfg.Stream.Group)
	}
	m := &Manager{cfg: cfg, log: log, rejected: map[string]int{}}
	m.self, m.inc = cfg.Cluster.Self()
	m.cfg.Stream.Incarnation, m.cfg.Stream.Signer = m.inc, cfg.Signer
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(3)
	go m.runFollower(ctx)
	go m.runLeader(ctx)
	go m.runAttester(ctx)
	return m, nil
}

// Stop ends the manager and waits for its goroutines. Idempotent.
func (m *Manager) Stop() {
	m.cancel()
	m.wg.Wait()
}

// Problem returns why membership operations are stopped, or "".
func (m *Manager) Problem() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.problem
}

func (m *Manager) setProblem(p string) {
	m.mu.Lock()
	changed := m.problem != p
	m.problem = p
	m.mu.Unlock()
	if changed && p != "" {
		m.log.Error("membership operations stopped; routing continues from the replicated directory", "problem", p)
	} else if changed {
		m.log.Info("membership operations resumed")
	}
}

// sleep waits d or until ctx ends; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Rejected returns how many committed records the manager skipped, by
// reason (the Reject constants), in its latest reading of the stream.
func (m *Manager) Rejected() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.rejected)
}

// runFollower announces this node and watches the record of committed
// changes for its own removal. It runs on every node. Only a verified
// record (Directory) that removes this exact Raft ID and incarnation stops
// the node; anything else is skipped, counted and logged.
func (m *Manager) runFollower(ctx context.Context) {
	defer m.wg.Done()
	var s *Stream
	for {
		var err error
		if s, err = OpenStream(ctx, m.cfg.Stream); err == nil {
			break
		}
		if !sleep(ctx, m.cfg.Poll) {
			return
		}
	}
	a := m.cfg.Announce
	a.Incarnation, a.RaftID, a.Protocol = m.inc, m.self, FormatVersion
	if m.cfg.Stream.Group != 0 {
		a.RaftID = 0
	}
	for failures := 0; !m.cfg.SkipAnnounce; failures++ {
		err := s.Announce(ctx, a)
		if err == nil {
			break
		}
		if failures == 0 && ctx.Err() == nil { // a stop is no failure
			m.log.Warn("cannot announce this node on the membership stream; retrying", "err", err)
		}
		if !sleep(ctx, time.Second) {
			return
		}
	}
	m.log.Info("watching the membership stream's verified committed changes", "stream", s.Name(), "announced", !m.cfg.SkipAnnounce)
	for ctx.Err() == nil {
		d := NewDirectory()
		err := s.Watch(ctx, 1, func(r Record) bool {
			for _, c := range d.Add(r) {
				if c.Op == OpBaseline && (d.RemovedIDs[m.self] || d.RemovedIncarnations[m.inc]) {
					m.cfg.Cluster.Removed(fmt.Sprintf("the membership stream (verified baseline at index %d tombstones member %s, incarnation %s)", c.Index, m.self, m.inc))
					return false
				}
				if c.Op == OpRemove && c.Member.ID == m.self && c.Member.Incarnation == m.inc {
					m.cfg.Cluster.Removed(fmt.Sprintf("the membership stream (verified removal of member %s, incarnation %s, committed at index %d)", c.Member.ID, m.inc, c.Index))
					return false
				}
			}
			m.noteRejections(d)
			return true
		}, KindCommitted)
		if err == nil || ctx.Err() != nil {
			return
		}
		m.log.Debug("watching committed changes", "err", err)
		sleep(ctx, time.Second)
	}
}

// noteRejections publishes the directory's rejection counts and logs each
// rejection once.
func (m *Manager) noteRejections(d *Directory) {
	m.mu.Lock()
	m.rejected = d.RejectedCounts()
	var fresh []RejectedRecord
	for _, rr := range d.Rejected {
		if rr.Seq > m.logged {
			fresh = append(fresh, rr)
			m.logged = rr.Seq
		}
	}
	m.mu.Unlock()
	for _, rr := range fresh {
		m.log.Warn("skipped a membership record", "seq", rr.Seq, "subject", rr.Subject, "reason", rr.Reason, "problem", rr.Problem)
	}
}

// runLeader does the leader's work whenever this node leads.
func (m *Manager) runLeader(ctx context.Context) {
	defer m.wg.Done()
	// A pass that fails (the stream or Raft unreachable) is retried after
	// a growing pause, up to 5s: each pass opens consumers on the stream.
	wait := m.cfg.Poll
	for sleep(ctx, wait) {
		if m.cfg.Cluster.Leader() != m.self {
			wait = m.cfg.Poll
			continue
		}
		err := m.leaderTerm(ctx)
		switch {
		case err == nil || errors.Is(err, errNotLeader) || errors.Is(err, context.Canceled):
			wait = m.cfg.Poll
		case ctx.Err() == nil:
			m.log.Debug("membership leader pass", "err", err)
			wait = min(2*wait, max(5*time.Second, m.cfg.Poll))
		}
	}
}

// errNotLeader ends a leader pass when leadership moved.
var errNotLeader = errors.New("membership: no longer the leader")

func (m *Manager) leaderTerm(ctx context.Context) error {
	s, err := m.boundStream(ctx)
	if err != nil {
		return err
	}
	m.setProblem("")
	termCtx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	// The pass ends when leadership moves or the stream stops being the
	// one the cluster is bound to (an ordered consumer would silently
	// follow a recreated stream).
	go func() {
		defer close(watched)
		for i := 1; sleep(termCtx, m.cfg.Poll); i++ {
			if m.cfg.Cluster.Leader() != m.self {
				cancel()
				return
			}
			if i%5 == 0 {
				if err := m.checkBinding(termCtx, s); err != nil && termCtx.Err() == nil {
					cancel()
					return
				}
			}
		}
	}()
	return m.processor(s).run(termCtx)
}

// processor returns the request processor of one leader pass over s.
func (m *Manager) processor(s recordLog) *processor {
	return &processor{cluster: m.cfg.Cluster, log: s, logger: m.log, self: m.self,
		promoteWait: m.cfg.PromoteWait, poll: m.cfg.Poll, changeTimeout: 10 * time.Second, transferTimeout: 5 * time.Second,
		sleep: sleep, now: time.Now, autoEvery: m.cfg.Poll, awaitEffective: true, effectiveWait: 2 * time.Second}
}

// boundStream returns the stream this cluster is bound to, creating and
// binding it the first time. A missing or recreated stream stops
// membership operations: an empty stream is never read as "no members".
func (m *Manager) boundStream(ctx context.Context) (*Stream, error) {
	st := m.cfg.Cluster.State()
	if st.Stream.Name == "" {
		s, err := CreateStream(ctx, m.cfg.Stream)
		if err != nil {
			return nil, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		if err := m.cfg.Cluster.Bind(ctx, s.Name(), info.Created); err != nil {
			return nil, err
		}
		m.log.Info("membership stream bound", "stream", s.Name(), "created", info.Created)
		return s, nil
	}
	s, err := OpenStream(ctx, m.cfg.Stream)
	if err != nil {
		if errors.Is(err, ErrStreamMissing) {
			m.setProblem(fmt.Sprintf("membership stream %s is missing (the cluster was bound to it, created %s)", st.Stream.Name, st.Stream.Created.Format(time.RFC3339Nano)))
		}
		return nil, err
	}
	if err := m.checkBinding(ctx, s); err != nil {
		if errors.Is(err, ErrStreamMismatch) {
			if ok, rerr := m.repair(ctx, s); ok {
				return s, nil
			} else if rerr != nil {
				m.log.Warn("membership stream repair failed", "err", rerr)
			}
		}
		return nil, err
	}
	return s, nil
}

// checkBinding verifies that s is the stream the cluster is bound to, and
// records the problem if it is not.
func (m *Manager) checkBinding(ctx context.Context, s *Stream) error {
	st := m.cfg.Cluster.State()
	info, err := s.Info(ctx)
	if errors.Is(err, ErrStreamMissing) {
		m.setProblem(fmt.Sprintf("membership stream %s is missing (the cluster was bound to it, created %s)", st.Stream.Name, st.Stream.Created.Format(time.RFC3339Nano)))
		return err
	}
	if err != nil {
		return err
	}
	if s.Name() != st.Stream.Name || !info.Created.Equal(st.Stream.Created) {
		m.setProblem(fmt.Sprintf("membership stream %s was recreated: created %s, but the cluster was bound to the one created %s",
			s.Name(), info.Created.Format(time.RFC3339Nano), st.Stream.Created.Format(time.RFC3339Nano)))
		return fmt.Errorf("%w: %s", ErrStreamMismatch, s.Name())
	}
	return nil
}
