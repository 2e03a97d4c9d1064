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
	// Change proposes a change and waits until it is settled; a rejection
	// is returned as an error wrapping ErrRejected with a Code.
	Change(ctx context.Context, requestID, op string, m Member) (index uint64, err error)
	// Bind records the stream in replicated state.
	Bind(ctx context.Context, name string, created time.Time) error
	// TransferLeadership hands leadership to the best other voter.
	TransferLeadership(ctx context.Context) error
	// CaughtUp reports whether a member's log is close to the commit index.
	CaughtUp(id HexID) bool
	// Removed stops the node: the stream recorded its removal.
	Removed(reason string)
}

// State is the replicated membership a Cluster reports.
type State struct {
	// Version is the Raft index of the last change that took effect: the
	// same number the stream's committed records carry.
	Version  uint64
	Members  []Member
	NextID   HexID
	Requests map[string]uint64 // settled request ID -> index
	// History holds every settled change in log order; Rejected is empty
	// for changes that took effect.
	History []Settled
	// StreamName and StreamCreated are the binding; empty when unbound.
	StreamName    string
	StreamCreated time.Time
}

// Settled is one entry of the replicated history.
type Settled struct {
	Committed
	Rejected string
	Code     string
}

// RejectionError is returned by Cluster.Change for a rejected change.
type RejectionError struct {
	Code   string
	Reason string
}

func (e *RejectionError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectionError) Is(target error) bool { return target == ErrRejected }

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	Stream StreamConfig
	// Cluster is the local node. Required.
	Cluster Cluster
	// Announce is this node's announcement, published at start.
	Announce Announce
	// Poll is how often leadership and the stream are checked. Default 200ms.
	Poll time.Duration
	// PromoteWait bounds how long a promote request waits for the learner
	// to catch up before it is rejected as not ready. Default 10s.
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
		cfg.PromoteWait = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "membership"), rejected: map[string]int{}}
	m.self, m.inc = cfg.Cluster.Self()
	m.cfg.Stream.Incarnation, m.cfg.Stream.Signer = m.inc, cfg.Signer
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go m.runFollower(ctx)
	go m.runLeader(ctx)
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
	for failures := 0; ; failures++ {
		err := s.Announce(ctx, a)
		if err == nil {
			break
		}
		if failures == 0 {
			m.log.Warn("cannot announce this node on the membership stream; retrying", "err", err)
		}
		if !sleep(ctx, time.Second) {
			return
		}
	}
	m.log.Info("announced; watching the membership stream's verified committed changes", "stream", s.Name())
	for ctx.Err() == nil {
		d := NewDirectory()
		err := s.Watch(ctx, 1, func(r Record) bool {
			for _, c := range d.Add(r) {
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
	for sleep(ctx, m.cfg.Poll) {
		if m.cfg.Cluster.Leader() != m.self {
			continue
		}
		if err := m.leaderTerm(ctx); err != nil && ctx.Err() == nil {
			m.log.Debug("membership leader pass", "err", err)
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
	if err := m.publishCommitted(ctx, s); err != nil {
		return err
	}
	// Read every request from the start: settled ones are recognised by ID
	// in replicated state (their outcome is published again, de-duplicated
	// by the server), so a leader change neither loses nor repeats one.
	termCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The pass ends when leadership moves or the stream stops being the
	// one the cluster is bound to (an ordered consumer would silently
	// follow a recreated stream).
	go func() {
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
	var passErr error
	err = s.Watch(termCtx, 1, func(r Record) bool {
		if r.Invalid != "" {
			// Never stops the pass: a malformed request is skipped.
			m.log.Debug("skipped a membership request", "seq", r.Seq, "reason", r.Invalid, "problem", r.Problem)
			return true
		}
		if passErr = m.handle(termCtx, s, r.Request); passErr != nil {
			return false
		}
		return true
	}, KindRequest)
	if passErr != nil {
		return passErr
	}
	return err
}

// boundStream returns the stream this cluster is bound to, creating and
// binding it the first time. A missing or recreated stream stops
// membership operations: an empty stream is never read as "no members".
func (m *Manager) boundStream(ctx context.Context) (*Stream, error) {
	st := m.cfg.Cluster.State()
	if st.StreamName == "" {
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
			m.setProblem(fmt.Sprintf("membership stream %s is missing (the cluster was bound to it, created %s)", st.StreamName, st.StreamCreated.Format(time.RFC3339Nano)))
		}
		return nil, err
	}
	if err := m.checkBinding(ctx, s); err != nil {
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
		m.setProblem(fmt.Sprintf("membership stream %s is missing (the cluster was bound to it, created %s)", st.StreamName, st.StreamCreated.Format(time.RFC3339Nano)))
		return err
	}
	if err != nil {
		return err
	}
	if s.Name() != st.StreamName || !info.Created.Equal(st.StreamCreated) {
		m.setProblem(fmt.Sprintf("membership stream %s was recreated: created %s, but the cluster was bound to the one created %s",
			s.Name(), info.Created.Format(time.RFC3339Nano), st.StreamCreated.Format(time.RFC3339Nano)))
		return fmt.Errorf("%w: %s", ErrStreamMismatch, s.Name())
	}
	return nil
}

// publishCommitted records every committed change the stream lacks.
func (m *Manager) publishCommitted(ctx context.Context, s *Stream) error {
	after, err := s.CommittedIndex(ctx)
	if err != nil {
		return err
	}
	for _, h := range m.cfg.Cluster.State().History {
		if h.Index <= after || h.Rejected != "" {
			continue
		}
		if err := s.PublishCommitted(ctx, h.Committed); err != nil {
			return err
		}
	}
	return nil
}

// handle settles one request, if it is not settled yet, and records the
// outcome. An error ends the leader pass (the request is then retried by
// this or the next leader).
func (m *Manager) handle(ctx context.Context, s *Stream, r *Request) error {
	st := m.cfg.Cluster.State()
	if idx, done := st.Requests[r.ID]; done {
		return m.publishSettled(ctx, s, st, r, idx)
	}
	if m.cfg.Cluster.Leader() != m.self {
		return errNotLeader
	}
	reject := func(code, format string, args ...any) error {
		return s.PublishOutcome(ctx, Outcome{RequestID: r.ID, Status: StatusRejected, Code: code,
			Reason: fmt.Sprintf(format, args...), Leader: m.self})
	}
	if r.ExpectVersion != 0 && r.ExpectVersion != st.Version {
		return reject(CodeConflict, "membership changed (now at version %d) since the request was made against version %d", st.Version, r.ExpectVersion)
	}
	var member Member
	switch r.Op {
	case OpAdd, OpAddLearner:
		if r.Incarnation == uuid.Nil {
			return reject(CodeInvalid, "add needs the incarnation of an announced node")
		}
		if !nkeys.IsValidPublicUserKey(r.PublicKey) {
			// A member without a key could sign nothing readers accept.
			return reject(CodeInvalid, "add needs the public key of the announced node (from its signed announcement)")
		}
		member = Member{ID: st.NextID, Name: r.Name, Incarnation: r.Incarnation, ClientURL: r.ClientURL, PublicKey: r.PublicKey}
	case OpPromote:
		member = Member{ID: r.RaftID}
		if !m.waitCaughtUp(ctx, r.RaftID) {
			return reject(CodeNotReady, "learner %s is not in sync with the leader yet; retry when it has caught up", r.RaftID)
		}
	case OpRemove:
		member = Member{ID: r.RaftID}
		if r.RaftID == m.self && len(st.Members) > 1 {
			// Removing the leader: hand leadership over first; the next
			// leader settles the request.
			m.log.Info("removal of the leader requested; transferring leadership first", "request", r.ID)
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := m.cfg.Cluster.TransferLeadership(tctx); err != nil {
				return err
			}
			return errNotLeader
		}
	default:
		return reject(CodeInvalid, "unknown operation %q", r.Op)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idx, err := m.cfg.Cluster.Change(cctx, r.ID, r.Op, member)
	var rej *RejectionError
	switch {
	case errors.Is(err, ErrAlreadySettled):
		st := m.cfg.Cluster.State()
		return m.publishSettled(ctx, s, st, r, st.Requests[r.ID])
	case errors.As(err, &rej):
		if err := s.PublishOutcome(ctx, Outcome{RequestID: r.ID, Status: StatusRejected, Code: rej.Code, Reason: rej.Reason, Index: idx, RaftID: member.ID, Leader: m.self}); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if err := m.publishCommitted(ctx, s); err != nil {
			return err
		}
		if err := s.PublishOutcome(ctx, Outcome{RequestID: r.ID, Status: StatusApplied, Index: idx, RaftID: member.ID, Leader: m.self}); err != nil {
			return err
		}
	}
	m.log.Info("membership request settled", "request", r.ID, "op", r.Op, "member", member.ID, "index", idx, "err", err)
	return nil
}

// publishSettled repeats the outcome of a request settled earlier.
func (m *Manager) publishSettled(ctx context.Context, s *Stream, st State, r *Request, idx uint64) error {
	o := Outcome{RequestID: r.ID, Status: StatusApplied, Index: idx, Leader: m.self}
	for _, h := range st.History {
		if h.Index == idx {
			o.RaftID = h.Member.ID
			if h.Rejected != "" {
				o.Status, o.Code, o.Reason = StatusRejected, h.Code, h.Rejected
			}
		}
	}
	if o.Status == StatusApplied {
		if err := m.publishCommitted(ctx, s); err != nil {
			return err
		}
	}
	return s.PublishOutcome(ctx, o)
}

func (m *Manager) waitCaughtUp(ctx context.Context, id HexID) bool {
	deadline := time.Now().Add(m.cfg.PromoteWait)
	for time.Now().Before(deadline) {
		if m.cfg.Cluster.CaughtUp(id) {
			return true
		}
		if !sleep(ctx, m.cfg.Poll) {
			return false
		}
	}
	return false
}
