package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nkeys"
)

// recordLog is what the request processor needs of the membership stream:
// *Stream implements it, tests use an in-memory log.
type recordLog interface {
	Watch(ctx context.Context, from uint64, fn func(Record) bool, kinds ...Kind) error
	ReadAll(ctx context.Context, kinds ...Kind) ([]Record, error)
	PublishOutcome(ctx context.Context, o Outcome) error
	PublishCommitted(ctx context.Context, c Committed) error
}

// processor is the leader's request processing for one leadership pass.
// Every request is decided exactly once, as a replicated fact: the
// decision (applied, or rejected with a code and a reason) goes through
// Raft (Cluster.Change or Cluster.Reject, idempotent by request ID) before
// its outcome is published, and a decided request is never evaluated
// again. The pass reads requests after the last decided stream sequence
// recorded in replicated state (State.DecidedSeq), so a new leader resumes
// where the previous one stopped.
//
// A request that cannot succeed becomes a rejection, and so does a change
// that does not commit within changeTimeout (not_ready; if it commits
// after all, it is the decision and the rejection is refused as a
// duplicate). Only a failure to reach Raft or the stream (lost
// leadership, stream down) ends the pass; the next pass retries the same
// request, which Raft de-duplicates by its ID. Nothing waits on one request while others
// queue: a promote waits for its learner only while no other request is
// pending, and at most PromoteWait; then it is rejected as not ready.
type processor struct {
	cluster Cluster
	log     recordLog
	logger  *slog.Logger
	self    HexID
	// promoteWait bounds the wait for a learner to catch up; poll is the
	// interval at which it is checked.
	promoteWait, poll time.Duration
	// changeTimeout bounds one proposal; transferTimeout a leadership
	// hand-over before the leader's own removal.
	changeTimeout, transferTimeout time.Duration
	// sleep waits d unless ctx ends first (reports whether to go on); now
	// reads the clock. Tests drive both.
	sleep func(ctx context.Context, d time.Duration) bool
	now   func() time.Time
	// autoEvery is how often learners marked AutoPromote are checked
	// between requests (0: only at the start of the pass and after each
	// request, as the tests drive it).
	autoEvery time.Duration
	// awaitEffective: before publishing an applied change's outcome, wait
	// (at most effectiveWait) until the stream's readers see the change in
	// effect, i.e. until a quorum of voters attested it (attest.go), so
	// that an operator's next command sees it.
	awaitEffective bool
	effectiveWait  time.Duration

	// mu serialises decisions: requests and automatic promotions.
	mu sync.Mutex
}

// AutoPromoteID is the request ID under which the leader decides the
// automatic promotion of learner id (`member add --learner
// --promote-when-caught-up`); Raft IDs are never reused, so the ID is
// unique, and its outcome is published like any request's.
func AutoPromoteID(id HexID) string { return "promote-" + id.String() }

// validRequestID: request IDs become subject tokens (outcome subjects).
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// requestID names the request a record carries; a record that has no
// usable ID is decided under its stream sequence and the creation time of
// the bound stream (sequences start again on a repaired stream).
func requestID(r Record, stream time.Time) string {
	if r.Invalid == "" && r.Request != nil && validRequestID.MatchString(r.Request.ID) {
		return r.Request.ID
	}
	return fmt.Sprintf("seq-%x-%d", stream.UnixNano(), r.Seq)
}

// run publishes what earlier passes decided but did not publish, then
// decides every request after the last decided one until ctx ends or the
// pass fails.
func (p *processor) run(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, p.changeTimeout)
	err := p.cluster.Barrier(bctx)
	cancel()
	if err != nil {
		return fmt.Errorf("membership: waiting to apply what earlier leaders decided: %w", err)
	}
	if err := p.publishMissing(ctx); err != nil {
		return err
	}
	if err := p.autoPromoteLocked(ctx); err != nil {
		return err
	}
	if p.autoEvery > 0 {
		actx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.promoteLoop(actx)
		}()
		defer func() { stop(); <-done }()
	}
	from := p.cluster.State().DecidedSeq + 1
	var passErr error
	err = p.log.Watch(ctx, from, func(r Record) bool {
		p.mu.Lock()
		passErr = p.handle(ctx, r)
		if passErr == nil {
			passErr = p.autoPromote(ctx)
		}
		p.mu.Unlock()
		return passErr == nil
	}, KindRequest)
	if passErr != nil {
		return passErr
	}
	return err
}

// promoteLoop checks the learners waiting for promotion while no request
// arrives.
func (p *processor) promoteLoop(ctx context.Context) {
	t := time.NewTicker(p.autoEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.autoPromoteLocked(ctx); err != nil && ctx.Err() == nil {
			p.logger.Debug("automatic promotion", "err", err)
		}
	}
}

func (p *processor) autoPromoteLocked(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.autoPromote(ctx)
}

// autoPromote promotes every learner marked AutoPromote that has caught
// up; each promotion is decided once (AutoPromoteID), like a request.
// Caller holds p.mu.
func (p *processor) autoPromote(ctx context.Context) error {
	st := p.cluster.State()
	for _, m := range st.Members {
		if !m.Learner || !m.AutoPromote {
			continue
		}
		id := AutoPromoteID(m.ID)
		if _, done := decided(st, id); done || !p.cluster.CaughtUp(m.ID) {
			continue
		}
		if p.cluster.Leader() != p.self {
			return errNotLeader
		}
		p.logger.Info("learner caught up; promoting it as asked", "member", m.ID, "name", m.Name)
		// Not rejected on a timeout: the promotion is retried, under the
		// same ID, until Raft decides it.
		if err := p.change(ctx, Decision{RequestID: id, Op: OpPromote, Member: Member{ID: m.ID}}, false); err != nil {
			return err
		}
	}
	return nil
}

// publishMissing records, from replicated state, every committed change
// and every outcome the stream lacks: a leader may have decided a request
// and lost leadership (or crashed) before publishing it.
func (p *processor) publishMissing(ctx context.Context) error {
	recs, err := p.log.ReadAll(ctx, KindCommitted, KindOutcome)
	if err != nil {
		return err
	}
	var committed, outcomes []Record
	for _, r := range recs {
		if r.Kind == KindOutcome {
			outcomes = append(outcomes, r)
		} else {
			committed = append(committed, r)
		}
	}
	d := Rebuild(committed)
	// What this node wrote itself: a change takes effect in readers once a
	// quorum of voters attested it, so the leader publishes its own
	// record of every change it lacks, whoever else wrote one.
	self := p.selfInc()
	mine := map[uint64]bool{}
	for _, r := range committed {
		if r.Invalid == "" && r.Source == self {
			mine[r.Committed.Index] = true
		}
	}
	published := map[string]bool{}
	for _, r := range outcomes {
		if reason, _ := d.judgeOutcome(r); reason == "" {
			published[r.Outcome.RequestID] = true
		}
	}
	st := p.cluster.State()
	if d.LastIndex() == 0 && needsBaseline(st) {
		// A repaired stream: the history before this leader cannot be
		// verified from it, so it starts with the membership as it is.
		b := Committed{Index: st.Version, Op: OpBaseline, Version: st.Version, Members: st.Members,
			RemovedIDs: st.RemovedIDs, RemovedIncarnations: st.RemovedIncarnations}
		if err := p.log.PublishCommitted(ctx, b); err != nil {
			return err
		}
		d.Add(Record{Kind: KindCommitted, Committed: &b, Source: p.selfInc(), Signer: ""})
		d.lastIndex = max(d.lastIndex, b.Index)
	}
	for _, h := range st.History {
		if h.Rejected == "" && IsChange(h.Op) && h.Index > d.LastIndex() && !mine[h.Index] {
			if err := p.log.PublishCommitted(ctx, committedOf(h)); err != nil {
				return err
			}
		}
	}
	for _, h := range st.History {
		if h.RequestID != "" && !published[h.RequestID] {
			if err := p.log.PublishOutcome(ctx, p.outcome(h)); err != nil {
				return err
			}
		}
	}
	return nil
}

// needsBaseline reports whether a stream holding no committed change
// must start with a baseline: unless the history is the bootstrap run
// alone (additions at indexes 1, 2, ...), which the stream's first
// readers accept as written by any of its voters.
func needsBaseline(st State) bool {
	if len(st.History) == 0 {
		return len(st.Members) > 0
	}
	for i, h := range st.History {
		if h.Index != uint64(i+1) || h.Rejected != "" || (h.Op != OpAdd && h.Op != OpAddLearner) {
			return true
		}
	}
	return false
}

func (p *processor) selfInc() uuid.UUID {
	_, inc := p.cluster.Self()
	return inc
}

// outcome is the published form of a decided request.
func (p *processor) outcome(h Settled) Outcome {
	o := Outcome{RequestID: h.RequestID, Status: StatusApplied, Index: h.Index, RaftID: h.Member.ID, Leader: p.self}
	if h.Rejected != "" {
		o.Status, o.Code, o.Reason = StatusRejected, h.Code, h.Rejected
	}
	return o
}

// decided returns the replicated decision of request id.
func decided(st State, id string) (Settled, bool) {
	idx, ok := st.Requests[id]
	if !ok {
		return Settled{}, false
	}
	for i := len(st.History) - 1; i >= 0; i-- {
		if h := st.History[i]; h.Index == idx && h.RequestID == id {
			return h, true
		}
	}
	// Decided, but the history entry is gone (an image older than
	// histories): the decision stands; nothing more is known.
	return Settled{Index: idx, RequestID: id}, true
}

// handle decides one request, unless it is decided already, and publishes
// the decision. An error ends the pass; it is returned only when Raft or
// the stream cannot be reached, never for a request that cannot succeed.
func (p *processor) handle(ctx context.Context, r Record) error {
	st := p.cluster.State()
	id := requestID(r, st.Stream.Created)
	if _, done := decided(st, id); done {
		return nil // a fact already: never evaluated again
	}
	if p.cluster.Leader() != p.self {
		return errNotLeader
	}
	d := Decision{RequestID: id, Seq: r.Seq}
	if r.Request != nil {
		d.Op = r.Request.Op
	}
	reject := func(code, format string, args ...any) error {
		return p.reject(ctx, d, code, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Invalid != "":
		return reject(CodeInvalid, "malformed request record (%s): %s", r.Invalid, r.Problem)
	case id != r.Request.ID:
		return reject(CodeInvalid, "request ID %q is not 1 to 64 letters, digits, '-' or '_'", r.Request.ID)
	}
	req := r.Request
	d.ExpectVersion = req.ExpectVersion
	if req.ExpectVersion != 0 && req.ExpectVersion != st.Version {
		return reject(CodeConflict, "membership changed (now at version %d) since the request was made against version %d", st.Version, req.ExpectVersion)
	}
	switch req.Op {
	case OpAdd, OpAddLearner:
		if req.Incarnation == uuid.Nil {
			return reject(CodeInvalid, "add needs the incarnation of an announced node")
		}
		if !nkeys.IsValidPublicUserKey(req.PublicKey) {
			// A member without a key could sign nothing readers accept.
			return reject(CodeInvalid, "add needs the public key of the announced node (from its signed announcement)")
		}
		if req.PromoteWhenCaughtUp && req.Op != OpAddLearner {
			return reject(CodeInvalid, "promote_when_caught_up needs add-learner")
		}
		id := st.NextID
		if req.RaftID != 0 {
			// A host keeps the Raft ID group 0 gave it in every group; an
			// ID is still never reused within a group.
			if req.RaftID < st.NextID {
				return reject(CodeInvalid, "raft ID %s was already used in this group (the next free one is %s)", req.RaftID, st.NextID)
			}
			id = req.RaftID
		}
		d.Member = Member{ID: id, Name: req.Name, Incarnation: req.Incarnation, ClientURL: req.ClientURL,
			PublicKey: req.PublicKey, Learner: req.Op == OpAddLearner, AutoPromote: req.PromoteWhenCaughtUp}
	case OpPromote:
		d.Member = Member{ID: req.RaftID}
		if m, ok := memberOf(st, req.RaftID); !ok {
			return reject(CodeNoSuchMember, "%s is not a member", req.RaftID)
		} else if !m.Learner {
			return reject(CodeInvalid, "%s is already a voter", req.RaftID)
		}
		if !p.caughtUp(ctx, req.RaftID, r.Pending) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return reject(CodeNotReady, "learner %s is not in sync with the leader yet; retry when it has caught up", req.RaftID)
		}
	case OpRemove:
		d.Member = Member{ID: req.RaftID}
		if req.RaftID == p.self && voters(st) > 1 {
			return p.removeLeader(ctx, d)
		}
		// With no other voter the change is proposed all the same: Raft
		// rejects it as the last voter's removal, a decided fact.
	case OpRepairStream:
		return reject(CodeInvalid, "the cluster is bound to this stream already: nothing to repair")
	default:
		return reject(CodeInvalid, "unknown operation %q", req.Op)
	}
	return p.change(ctx, d, true)
}

// removeLeader hands leadership over so that the next leader removes this
// node; a hand-over that fails becomes a not_ready rejection (the
// operator can retry), never a request that blocks the queue.
func (p *processor) removeLeader(ctx context.Context, d Decision) error {
	p.logger.Info("removal of the leader requested; transferring leadership first", "request", d.RequestID)
	tctx, cancel := context.WithTimeout(ctx, p.transferTimeout)
	err := p.cluster.TransferLeadership(tctx)
	cancel()
	if err == nil {
		return errNotLeader // the next leader decides the request
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p.cluster.Leader() != p.self {
		return errNotLeader
	}
	return p.reject(ctx, d, CodeNotReady, fmt.Sprintf("cannot remove the leader %s: handing leadership over failed (%v); retry", d.Member.ID, err))
}

// change proposes the change; Raft decides it (applied, or rejected by the
// rules every node applies alike) and the decision is then published.
// With rejectSlow, a change not decided within changeTimeout is decided
// as not ready instead.
func (p *processor) change(ctx context.Context, d Decision, rejectSlow bool) error {
	cctx, cancel := context.WithTimeout(ctx, p.changeTimeout)
	idx, err := p.cluster.Change(cctx, d)
	cancel()
	var rej *RejectionError
	switch {
	case err == nil, errors.Is(err, ErrAlreadySettled), errors.As(err, &rej):
	case rejectSlow && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && p.cluster.Leader() == p.self:
		// Not decided in time (the change may still commit): decide the
		// request as not ready. Both go through Raft by request ID, so
		// whichever is applied first is the decision, and the queue moves.
		return p.reject(ctx, d, CodeNotReady, fmt.Sprintf("the change did not commit within %v; retry", p.changeTimeout))
	default:
		return fmt.Errorf("membership: request %s: %w", d.RequestID, err)
	}
	p.logger.Info("membership request decided", "request", d.RequestID, "op", d.Op, "member", d.Member.ID, "index", idx, "rejected", err)
	return p.publish(ctx, d.RequestID)
}

// reject records a rejection through Raft, then publishes it.
func (p *processor) reject(ctx context.Context, d Decision, code, reason string) error {
	cctx, cancel := context.WithTimeout(ctx, p.changeTimeout)
	_, err := p.cluster.Reject(cctx, d, code, reason)
	cancel()
	if err != nil && !errors.Is(err, ErrAlreadySettled) {
		return fmt.Errorf("membership: recording the rejection of request %s: %w", d.RequestID, err)
	}
	p.logger.Info("membership request rejected", "request", d.RequestID, "op", d.Op, "code", code, "reason", reason)
	return p.publish(ctx, d.RequestID)
}

// publish records a decided request on the stream, from replicated state:
// the committed change first (if it took effect), then the outcome.
func (p *processor) publish(ctx context.Context, id string) error {
	st := p.cluster.State()
	h, ok := decided(st, id)
	if !ok {
		return fmt.Errorf("membership: request %s is not decided in replicated state", id)
	}
	if h.Rejected == "" && IsChange(h.Op) {
		if err := p.log.PublishCommitted(ctx, committedOf(h)); err != nil {
			return err
		}
		if p.awaitEffective {
			p.waitEffective(ctx, h.Index)
		}
	}
	return p.log.PublishOutcome(ctx, p.outcome(h))
}

// waitEffective waits until the stream's readers see the change at index
// in effect, or effectiveWait passed (the outcome is published then all
// the same: the decision is a fact; readers see the change once attested;
// a voter that is down attests when it is back).
func (p *processor) waitEffective(ctx context.Context, index uint64) {
	deadline := p.now().Add(p.effectiveWait)
	for {
		recs, err := p.log.ReadAll(ctx, KindCommitted)
		if err == nil && Rebuild(recs).LastIndex() >= index {
			return
		}
		if !p.now().Before(deadline) || !p.sleep(ctx, p.poll) {
			p.logger.Warn("a quorum of voters has not attested the change on the membership stream yet; publishing its outcome", "index", index)
			return
		}
	}
}

// caughtUp reports whether learner id is in sync, waiting for it at most
// promoteWait and only while no other request is pending.
func (p *processor) caughtUp(ctx context.Context, id HexID, pending uint64) bool {
	deadline := p.now().Add(p.promoteWait)
	for {
		if p.cluster.CaughtUp(id) {
			return true
		}
		if pending > 0 || !p.now().Before(deadline) || !p.sleep(ctx, p.poll) {
			return false
		}
	}
}

func memberOf(st State, id HexID) (Member, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func voters(st State) int {
	n := 0
	for _, m := range st.Members {
		if !m.Learner {
			n++
		}
	}
	return n
}
