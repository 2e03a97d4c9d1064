package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/raftbridge"
)

// Membership change operations, as named in requests and in the history.
const (
	OpAdd        = "add"
	OpAddLearner = "add-learner"
	OpPromote    = "promote"
	OpRemove     = "remove"
)

// MembershipChange asks for one membership change.
type MembershipChange struct {
	// RequestID identifies the operator's request; a request is settled at
	// most once however often it is proposed (by successive leaders, say).
	RequestID string
	// Op is OpAdd, OpAddLearner, OpPromote or OpRemove.
	Op string
	// Member names the member: for adds every field (ID, incarnation, name,
	// client URL), for promote and remove only the ID.
	Member Member
	// Seq is the membership stream sequence of the request (0: none);
	// deciding the request records it in replicated state.
	Seq uint64
	// ExpectVersion, when not 0, is the membership version (the index of
	// the last change that took effect) the request was made against; the
	// change is rejected with ErrConflict, when applied, if membership has
	// changed since.
	ExpectVersion uint64
}

// MembershipState is a copy of the replicated membership, read under one
// lock: the one model that the membership processor, the CLI and /status
// use too.
type MembershipState = raftbridge.Membership

// Membership returns the replicated membership as applied on this node.
func (n *Node) Membership() MembershipState {
	return n.members.image().state()
}

// ChangeMembership proposes a membership change and waits until it is
// settled here. It returns the index that settled it, and the reason when
// it was rejected (ErrNoSuchMember, ErrLastVoter, ErrTombstoned,
// ErrInvalidChange, ErrDuplicateRequest).
func (n *Node) ChangeMembership(ctx context.Context, c MembershipChange) (uint64, error) {
	var t raftpb.ConfChangeType
	m := c.Member
	var member *Member
	switch c.Op {
	case OpAdd:
		t, member = raftpb.ConfChangeAddNode, &m
	case OpAddLearner:
		m.Learner = true
		t, member = raftpb.ConfChangeAddLearnerNode, &m
	case OpPromote:
		t = raftpb.ConfChangeAddNode
	case OpRemove:
		t = raftpb.ConfChangeRemoveNode
	default:
		return 0, fmt.Errorf("%w: unknown operation %q", ErrInvalidChange, c.Op)
	}
	if m.ID == 0 {
		return 0, fmt.Errorf("%w: no raft ID", ErrInvalidChange)
	}
	if member != nil && member.Incarnation == uuid.Nil {
		return 0, fmt.Errorf("%w: adding %s without an incarnation", ErrInvalidChange, raftbridge.ID(m.ID).String())
	}
	if err := n.checkUsable(); err != nil {
		return 0, err
	}
	req := n.nextRequestID()
	if c.RequestID == "" {
		// Every change carries a request ID, so that a re-proposal (below)
		// is decided once.
		c.RequestID = fmt.Sprintf("node-%s-%x", raftbridge.ID(n.cfg.ID), req)
	}
	cctx, err := jsonMarshal(confContext{Request: req, Member: member, RequestID: c.RequestID, Time: time.Now().UTC(),
		Seq: c.Seq, ExpectVersion: c.ExpectVersion})
	if err != nil {
		return 0, err
	}
	cc := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: t.Enum(), NodeId: proto.Uint64(uint64(m.ID))}},
		Context: cctx,
	}
	ch := n.props.register(req)
	n.wake(wakeMembership)
	r, err := n.proposeUntilDecided(ctx, req, ch, func() error { return n.raft.ProposeConfChange(ctx, cc) })
	if err != nil {
		return 0, err
	}
	return r.index, r.err
}

// proposeUntilDecided proposes, and proposes again after every election
// timeout without an answer, until the entry carrying req is applied here.
// Raft drops a proposal silently: a leader replaces a ConfChange with an
// empty entry while an earlier one is not yet applied as Raft counts it
// (the apply loop answers the previous change before the Ready loop
// advances Raft), and a proposal in flight across a leader change is lost.
// The request ID in the entry makes every copy after the first decided
// one a no-op, so re-proposing is safe; the first copy applied answers.
func (n *Node) proposeUntilDecided(ctx context.Context, req uint64, ch chan result, propose func() error) (result, error) {
	retry := time.NewTicker(time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer retry.Stop()
	for {
		if err := propose(); err != nil {
			n.props.cancel(req)
			return result{}, n.mapRaftErr(err)
		}
		r, again, err := n.awaitOrRetry(ctx, req, ch, retry.C)
		if !again {
			return r, err
		}
		n.metrics.proposalRetries.Inc()
	}
}

// await waits for the answer to request req.
func (n *Node) await(ctx context.Context, req uint64, ch chan result) (result, error) {
	r, _, err := n.awaitOrRetry(ctx, req, ch, nil)
	return r, err
}

// awaitOrRetry waits for the answer to request req, or for retry to fire
// (again: the request is still registered).
func (n *Node) awaitOrRetry(ctx context.Context, req uint64, ch chan result, retry <-chan time.Time) (r result, again bool, err error) {
	select {
	case r := <-ch:
		return r, false, nil
	case <-retry:
		return result{}, true, nil
	case <-ctx.Done():
		n.props.cancel(req)
		return result{}, false, ctx.Err()
	case <-n.stopc:
		n.props.cancel(req)
		return result{}, false, n.stoppedErr()
	}
}

// AddMember adds m (as a learner if m.Learner) and waits until settled.
func (n *Node) AddMember(ctx context.Context, m Member) (uint64, error) {
	op := OpAdd
	if m.Learner {
		op = OpAddLearner
	}
	return n.ChangeMembership(ctx, MembershipChange{Op: op, Member: m})
}

// PromoteMember turns learner id into a voter.
func (n *Node) PromoteMember(ctx context.Context, id uint64) (uint64, error) {
	return n.ChangeMembership(ctx, MembershipChange{Op: OpPromote, Member: Member{ID: raftbridge.ID(id)}})
}

// RemoveMember removes id; its Raft ID and incarnation are tombstoned
// forever once the change is applied.
func (n *Node) RemoveMember(ctx context.Context, id uint64) (uint64, error) {
	return n.ChangeMembership(ctx, MembershipChange{Op: OpRemove, Member: Member{ID: raftbridge.ID(id)}})
}

// systemCommand is the JSON body of a system entry.
type systemCommand struct {
	BindStream   *StreamBinding `json:"bind_stream,omitempty"`
	Reject       *Rejection     `json:"reject,omitempty"`
	RebindStream *Rebinding     `json:"rebind_stream,omitempty"`
}

// Rebinding replaces the cluster's stream binding: the operator's repair
// request (RequestID, at Seq of the new stream) after the bound stream was
// lost or recreated.
type Rebinding struct {
	Stream    StreamBinding `json:"stream"`
	RequestID string        `json:"request_id"`
	Seq       uint64        `json:"seq,omitempty"`
	Time      time.Time     `json:"time,omitzero"`
}

// OpRepairStream names a stream repair in the history.
const OpRepairStream = "repair-stream"

// RebindStream binds the cluster, in replicated state, to another
// membership stream, deciding the repair request r.RequestID: requests
// are read again from the start of the new stream (a decided request is
// still recognised by its ID). A request decided before returns
// ErrDuplicateRequest and changes nothing.
func (n *Node) RebindStream(ctx context.Context, r Rebinding) (uint64, error) {
	if r.RequestID == "" || r.Stream.Name == "" {
		return 0, fmt.Errorf("%w: a rebinding needs a request ID and a stream", ErrInvalidChange)
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	return n.proposeSystem(ctx, systemCommand{RebindStream: &r})
}

// RejectMembership records, through Raft, that the operator request
// r.RequestID is rejected (r.Code, r.Reason), and waits until that is
// applied here. It returns the index that settled the request: a request
// that was decided already keeps its first decision, and the call returns
// ErrDuplicateRequest with the index of the new entry. A decided request
// is never evaluated again, by any leader.
func (n *Node) RejectMembership(ctx context.Context, r Rejection) (uint64, error) {
	if r.RequestID == "" || r.Code == "" {
		return 0, fmt.Errorf("%w: a rejection needs a request ID and a code", ErrInvalidChange)
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	return n.proposeSystem(ctx, systemCommand{Reject: &r})
}

// ErrStreamBound is returned by BindStream when the cluster is already
// bound to another stream.
var ErrStreamBound = errors.New("node: cluster is bound to another membership stream")

// BindStream records, in replicated state, the membership stream this
// cluster uses. A cluster is bound once: binding again to the same stream is
// a no-op, to another one fails with ErrStreamBound.
func (n *Node) BindStream(ctx context.Context, b StreamBinding) error {
	_, err := n.proposeSystem(ctx, systemCommand{BindStream: &b})
	return err
}

// proposeSystem proposes a system entry and waits until it is applied
// here; it returns the entry's index and its verdict.
func (n *Node) proposeSystem(ctx context.Context, cmd systemCommand) (uint64, error) {
	if err := n.checkUsable(); err != nil {
		return 0, err
	}
	body, err := jsonMarshal(cmd)
	if err != nil {
		return 0, err
	}
	req := n.nextRequestID()
	ch := n.props.register(req)
	n.wake(wakeMembership)
	if err := n.raft.Propose(ctx, encodeTagged(entryTagSystem, req, body)); err != nil {
		n.props.cancel(req)
		return 0, n.mapRaftErr(err)
	}
	r, err := n.await(ctx, req, ch)
	if err != nil {
		return 0, err
	}
	return r.index, r.err
}

// applySystem applies a system entry; the verdict depends only on
// replicated state.
func (n *Node) applySystem(index uint64, body []byte) error {
	cmd, err := decodeSystem(index, body)
	if err != nil {
		return err
	}
	err = n.members.system(index, cmd)
	switch {
	case err != nil:
	case cmd.RebindStream != nil:
		r := cmd.RebindStream
		n.log.Warn("cluster rebound to a repaired membership stream", "index", index, "stream", r.Stream.Name, "created", r.Stream.Created, "request", r.RequestID)
	case cmd.Reject != nil:
		r := cmd.Reject
		n.log.Info("membership request rejected", "index", index, "request", r.RequestID, "op", r.Op, "code", r.Code, "reason", r.Reason)
	case cmd.BindStream != nil:
		n.log.Info("cluster bound to its membership stream", "stream", cmd.BindStream.Name, "created", cmd.BindStream.Created)
	}
	return err
}

func decodeSystem(index uint64, body []byte) (systemCommand, error) {
	var cmd systemCommand
	if err := json.Unmarshal(body, &cmd); err != nil {
		return cmd, fmt.Errorf("node: system entry %d: %w", index, err)
	}
	return cmd, nil
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.isLeader.Load() }

// TransferLeadership asks the leader to hand leadership to id and waits
// until some other node leads (or ctx ends).
func (n *Node) TransferLeadership(ctx context.Context, id uint64) error {
	if !n.isLeader.Load() {
		return ErrNotLeader
	}
	n.wake(wakeMembership)
	n.raft.TransferLeadership(ctx, n.cfg.ID, id)
	tick := time.NewTicker(n.cfg.TickInterval)
	defer tick.Stop()
	for {
		if l := n.lead.Load(); l != n.cfg.ID && l != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return n.stoppedErr()
		case <-tick.C:
		}
	}
}

// BestTransferee returns the voter, other than this node, whose log is
// most up to date, or 0. Only meaningful on the leader.
func (n *Node) BestTransferee() uint64 {
	st := n.raft.Status()
	var best, bestMatch uint64
	ids := make([]uint64, 0, len(st.Progress))
	for id := range st.Progress {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		pr := st.Progress[id]
		if id == n.cfg.ID || pr.IsLearner {
			continue
		}
		if best == 0 || pr.Match > bestMatch {
			best, bestMatch = id, pr.Match
		}
	}
	return best
}

// CaughtUp reports whether member id's log is within lag entries of the
// leader's commit index. Only meaningful on the leader.
func (n *Node) CaughtUp(id uint64, lag uint64) bool {
	st := n.raft.Status()
	pr, ok := st.Progress[id]
	return ok && pr.Match+lag >= st.GetCommit()
}

// MarkRemoved stops a node that learned of its own removal from the
// membership stream's record of committed changes (the log may never tell
// it: the leader stops replicating to a removed node).
func (n *Node) MarkRemoved(source string) { n.selfRemoved(source) }
