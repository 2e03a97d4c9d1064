package node

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/raftbridge"
)

// Member is one member of the cluster as recorded in the replicated state:
// the one membership record raftbus has (see raftbridge.Member), shared with
// package membership, the CLI and /status.
type Member = raftbridge.Member

// confContext travels in a ConfChangeV2's Context: who is being added (and
// the proposal it answers, so the proposer can be told the outcome).
type confContext struct {
	Request uint64  `json:"request,omitempty"`
	Member  *Member `json:"member,omitempty"`
	// RequestID is the operator's request (from the membership stream) this
	// change carries out; a request is applied at most once.
	RequestID string `json:"request_id,omitempty"`
	// Time is when the change was proposed, for the history.
	Time time.Time `json:"time,omitzero"`
	// Seq is the membership stream sequence of the request; deciding the
	// request records it (membership.decidedSeq), so that a new leader
	// resumes reading requests after it.
	Seq uint64 `json:"seq,omitempty"`
	// ExpectVersion is the membership version the request was made
	// against (0: any). It is checked when the entry is applied, against
	// replicated state, so the verdict is the same on every node.
	ExpectVersion uint64 `json:"expect_version,omitempty"`
}

// membership is the replicated membership state: current members and
// tombstones. It is changed only by applying committed ConfChanges (or a
// snapshot), and it is included in every snapshot, so tombstones survive
// log compaction. It implements raftbridge.Directory.
type membership struct {
	mu      sync.RWMutex
	members map[uint64]*Member
	// dir holds the members' identities and the tombstones, fed through
	// the raftbridge membership kit (ApplyConfChangeMember) by every
	// change that takes effect: the reference node and a kit user's own
	// raft loop apply membership with the same code. The bridge's lookups
	// go to it. Its pointer never changes (restore restores it in place).
	dir *raftbridge.MemDirectory
	// version is the Raft index of the last applied membership change, the
	// same on every node that applied it.
	version uint64
	// maxID is the highest Raft ID ever used here, tombstones included: new
	// IDs are allocated above it, so no ID is ever reused.
	maxID uint64
	// requests maps operator request IDs to the index that settled them.
	requests map[string]uint64
	// history lists every membership change in log order.
	history []Change
	// stream is the membership stream this cluster is bound to.
	stream *StreamBinding
	// decidedSeq is the highest membership stream sequence of a request
	// decided (applied or rejected) in replicated state.
	decidedSeq uint64
	// effective is the Raft index of the last change that took effect (not
	// rejected): the version operators see and requests are made against.
	effective uint64
	// joining holds Config.JoinMembers: the directory answers from it only
	// until the first replicated membership (a snapshot or the log) is
	// applied. It is never part of the replicated state.
	joining map[uint64]Member
}

// Change is one settled membership change, as kept in replicated state
// (and in snapshots, in this JSON form).
type Change = raftbridge.Settled

// ErrConflict: the request was made against a membership version that is
// no longer current.
var ErrConflict = errors.New("node: membership changed since the request was made")

// RejectionCode names the kind of a rejected membership change:
// no_such_member, last_voter, tombstoned, duplicate, conflict or invalid.
// Rejections a leader decides (RejectMembership) carry their own code.
func RejectionCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoSuchMember):
		return "no_such_member"
	case errors.Is(err, ErrLastVoter):
		return "last_voter"
	case errors.Is(err, ErrTombstoned):
		return "tombstoned"
	case errors.Is(err, ErrDuplicateRequest):
		return "duplicate"
	case errors.Is(err, ErrConflict):
		return "conflict"
	}
	return "invalid"
}

// StreamBinding identifies the cluster's membership stream.
type StreamBinding = raftbridge.StreamBinding

func newMembership() *membership {
	return &membership{
		members:  map[uint64]*Member{},
		dir:      raftbridge.NewMemDirectory(),
		requests: map[string]uint64{},
	}
}

// Incarnation implements raftbridge.Directory.
func (ms *membership) Incarnation(id uint64) (uuid.UUID, bool) {
	if inc, ok := ms.dir.Incarnation(id); ok {
		return inc, true
	}
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	if m, ok := ms.joinable()[id]; ok {
		return m.Incarnation, true
	}
	return uuid.Nil, false
}

// joinable returns the members a joining node was told about (Config.
// JoinMembers) while nothing replicated is known yet, else nil. Caller
// holds the lock.
func (ms *membership) joinable() map[uint64]Member {
	if ms.version != 0 || len(ms.members) != 0 {
		return nil
	}
	return ms.joining
}

// RemovedID implements raftbridge.Directory.
func (ms *membership) RemovedID(id uint64) bool { return ms.dir.RemovedID(id) }

// RemovedIncarnation implements raftbridge.Directory.
func (ms *membership) RemovedIncarnation(inc uuid.UUID) bool { return ms.dir.RemovedIncarnation(inc) }

// MemberOf implements raftbridge.IncarnationLookup.
func (ms *membership) MemberOf(inc uuid.UUID) (uint64, bool) {
	if id, ok := ms.dir.MemberOf(inc); ok {
		return id, true
	}
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	for id, m := range ms.joinable() {
		if m.Incarnation == inc {
			return id, true
		}
	}
	return 0, false
}

// memberAt reports whether id was a member (voter or learner) just before
// index, from the history of settled changes. Unlike the directory's
// current view it does not depend on how far the directory was primed at a
// restart, so the apply loop can use it for decisions every replica must
// make alike.
func (ms *membership) memberAt(id, index uint64) bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	for i := len(ms.history) - 1; i >= 0; i-- {
		ch := ms.history[i]
		if ch.Index >= index || uint64(ch.Member.ID) != id || ch.Rejected != "" {
			continue
		}
		return ch.Op != OpRemove
	}
	// No settled change of id before index in the history: it is a member
	// only if it is one now and was not added later (a snapshot taken
	// before histories were kept describes members added before it).
	if _, ok := ms.members[id]; !ok {
		return false
	}
	for _, ch := range ms.history {
		if uint64(ch.Member.ID) == id && ch.Rejected == "" && ch.Index >= index {
			return false
		}
	}
	return true
}

// Version implements raftbridge.Directory.
func (ms *membership) Version() uint64 {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	return ms.version
}

// list returns the members sorted by ID.
func (ms *membership) list() []Member {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	out := make([]Member, 0, len(ms.members))
	for _, m := range ms.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// decide settles the membership change carried by the committed entry at
// index: it validates the change against replicated state, applies it if
// valid, and records the verdict in the history. It returns nil when the
// change takes effect and the reason when it does not. A rejected change is
// applied to Raft as a no-op on every node alike, because the verdict
// depends only on replicated state.
//
// Deciding an index that was already settled (Raft replays committed
// entries after a restart, and the directory is primed before that) returns
// the recorded verdict and changes nothing.
func (ms *membership) decide(index uint64, cc *raftpb.ConfChangeV2, ctx *confContext) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if index <= ms.version {
		for i := len(ms.history) - 1; i >= 0 && ms.history[i].Index >= index; i-- {
			if ms.history[i].Index == index && ms.history[i].Rejected != "" {
				return fmt.Errorf("%w: %s", errReplayedRejection, ms.history[i].Rejected)
			}
		}
		return nil
	}
	var verdict error
	for _, ch := range cc.GetChanges() {
		if verdict = ms.validate(ch, ctx); verdict != nil {
			break
		}
	}
	if verdict == nil {
		verdict = ms.applyKit(cc, ctx)
	}
	if verdict == nil {
		for _, ch := range cc.GetChanges() {
			ms.apply(ch, ctx)
		}
	}
	for _, ch := range cc.GetChanges() {
		ms.settle(index, ch, ctx, verdict)
	}
	ms.version = index
	if verdict == nil {
		ms.effective = index
	}
	return verdict
}

// applyKit records a validated change in the directory through the
// membership kit, whose rules (tombstones, one incarnation per ID, key
// shape) every raftbus user's raft loop applies too; what it refuses is
// rejected here as invalid, the same on every node. Caller holds the lock.
func (ms *membership) applyKit(cc *raftpb.ConfChangeV2, ctx *confContext) error {
	var m *Member
	if ctx != nil && ctx.Member != nil && len(cc.GetChanges()) == 1 {
		named := *ctx.Member
		named.ID = raftbridge.ID(cc.GetChanges()[0].GetNodeId())
		m = &named
	}
	if _, err := raftbridge.ApplyConfChangeMember(ms.dir, cc, m); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidChange, err)
	}
	return nil
}

// errReplayedRejection marks the verdict of a change settled before.
var errReplayedRejection = errors.New("node: rejected when first applied")

// validate checks one change. Caller holds the lock.
func (ms *membership) validate(cc *raftpb.ConfChangeSingle, ctx *confContext) error {
	id := cc.GetNodeId()
	if ctx != nil && ctx.RequestID != "" {
		if at, done := ms.requests[ctx.RequestID]; done {
			return fmt.Errorf("%w: request %s was settled at index %d", ErrDuplicateRequest, ctx.RequestID, at)
		}
	}
	if ctx != nil && ctx.ExpectVersion != 0 && ctx.ExpectVersion != ms.effective {
		return fmt.Errorf("%w: membership is at version %d, the request was made against version %d", ErrConflict, ms.effective, ctx.ExpectVersion)
	}
	if ms.dir.RemovedID(id) {
		return fmt.Errorf("%w: raft ID %s was removed and can never return", ErrTombstoned, raftbridge.ID(id).String())
	}
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		cur, exists := ms.members[id]
		if ctx == nil || ctx.Member == nil {
			if !exists {
				return fmt.Errorf("%w: raft ID %s", ErrNoSuchMember, raftbridge.ID(id).String())
			}
			if !cur.Learner {
				return fmt.Errorf("%w: %s is already a voter", ErrInvalidChange, raftbridge.ID(id).String())
			}
			return nil // promotion of a learner
		}
		if ms.dir.RemovedIncarnation(ctx.Member.Incarnation) {
			return fmt.Errorf("%w: incarnation %s was removed and can never return", ErrTombstoned, ctx.Member.Incarnation)
		}
		if exists {
			return fmt.Errorf("%w: raft ID %s already belongs to incarnation %s", ErrInvalidChange, raftbridge.ID(id).String(), cur.Incarnation)
		}
		for oid, m := range ms.members {
			if m.Incarnation == ctx.Member.Incarnation {
				return fmt.Errorf("%w: incarnation %s is already member %s", ErrInvalidChange, m.Incarnation, raftbridge.ID(oid).String())
			}
		}
	case raftpb.ConfChangeRemoveNode:
		m, ok := ms.members[id]
		if !ok {
			return fmt.Errorf("%w: raft ID %s", ErrNoSuchMember, raftbridge.ID(id).String())
		}
		if !m.Learner && ms.voters() == 1 {
			return fmt.Errorf("%w: %s is the last voter", ErrLastVoter, raftbridge.ID(id).String())
		}
	}
	return nil
}

// voters counts voting members. Caller holds the lock.
func (ms *membership) voters() int {
	n := 0
	for _, m := range ms.members {
		if !m.Learner {
			n++
		}
	}
	return n
}

// settle records the verdict on a change at index in the history, and the
// operator request as settled. Caller holds the lock.
func (ms *membership) settle(index uint64, cc *raftpb.ConfChangeSingle, ctx *confContext, rejected error) {
	ch := Change{Index: index, Op: opName(cc.GetType(), ctx), Member: Member{ID: raftbridge.ID(cc.GetNodeId())}}
	if m, ok := ms.members[cc.GetNodeId()]; ok {
		ch.Member = *m
	} else if m, ok := ms.lastKnown(cc.GetNodeId()); ok {
		// Removed by this very change (apply ran first) or unknown now:
		// the history names the member as it was.
		ch.Member = m
	}
	if ctx != nil {
		if ctx.Member != nil {
			ch.Member = *ctx.Member
			ch.Member.ID = raftbridge.ID(cc.GetNodeId())
		}
		ch.RequestID, ch.Time = ctx.RequestID, ctx.Time
		if ctx.RequestID != "" && !errors.Is(rejected, ErrDuplicateRequest) {
			ms.requests[ctx.RequestID] = index
			ch.Seq = ctx.Seq
			ms.decidedSeq = max(ms.decidedSeq, ctx.Seq)
		}
	}
	if rejected != nil {
		ch.Rejected, ch.Code = rejected.Error(), RejectionCode(rejected)
	}
	ms.record(ch)
}

// record inserts a settled change into the history in index order (a
// system entry can be applied after the directory was primed with later
// changes). Caller holds the lock.
func (ms *membership) record(ch Change) {
	i := len(ms.history)
	for i > 0 && ms.history[i-1].Index > ch.Index {
		i--
	}
	ms.history = slices.Insert(ms.history, i, ch)
}

// lastKnown returns member id as the history last recorded it with an
// incarnation (the change that added it). Caller holds the lock.
func (ms *membership) lastKnown(id uint64) (Member, bool) {
	for i := len(ms.history) - 1; i >= 0; i-- {
		h := ms.history[i]
		if uint64(h.Member.ID) == id && h.Rejected == "" && h.Member.Incarnation != uuid.Nil {
			return h.Member, true
		}
	}
	return Member{}, false
}

// Rejection is the body of a system entry that records a leader's
// rejection of an operator request as a replicated fact.
type Rejection struct {
	RequestID string    `json:"request_id"`
	Seq       uint64    `json:"seq,omitempty"`
	Op        string    `json:"op"`
	Member    Member    `json:"member"`
	Code      string    `json:"code"`
	Reason    string    `json:"reason"`
	Time      time.Time `json:"time,omitzero"`
}

// system applies a system entry's command at index: idempotent, so that
// the apply loop replaying an entry primeMembership applied changes
// nothing.
func (ms *membership) system(index uint64, cmd systemCommand) error {
	switch {
	case cmd.RebindStream != nil:
		return ms.rebind(index, *cmd.RebindStream)
	case cmd.Reject != nil:
		return ms.reject(index, *cmd.Reject)
	case cmd.BindStream != nil:
		return ms.bind(*cmd.BindStream)
	}
	return nil
}

// bind binds the cluster to stream b once; binding again to the same
// stream is a no-op.
func (ms *membership) bind(b StreamBinding) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	switch cur := ms.stream; {
	case cur == nil:
		ms.stream = &b
	case cur.Name != b.Name || !cur.Created.Equal(b.Created):
		return fmt.Errorf("%w: %s created %s (asked: %s created %s)", ErrStreamBound, cur.Name, cur.Created, b.Name, b.Created)
	}
	return nil
}

// rebind replaces the stream binding, deciding the repair request; the
// decided sequence restarts on the new stream. Caller: the apply loop.
func (ms *membership) rebind(index uint64, r Rebinding) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if at, done := ms.requests[r.RequestID]; done {
		if at == index {
			return nil
		}
		return fmt.Errorf("%w: request %s was settled at index %d", ErrDuplicateRequest, r.RequestID, at)
	}
	b := r.Stream
	ms.stream = &b
	ms.requests[r.RequestID] = index
	ms.decidedSeq = 0
	ms.record(Change{Index: index, Op: OpRepairStream, RequestID: r.RequestID, Time: r.Time, Seq: r.Seq})
	return nil
}

// reject settles request r as rejected at index, unless it was decided
// already: then it returns ErrDuplicateRequest and changes nothing, the
// same on every node. Replaying the entry that decided it is a no-op.
func (ms *membership) reject(index uint64, r Rejection) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if r.RequestID == "" {
		return fmt.Errorf("%w: a rejection without a request ID", ErrInvalidChange)
	}
	if at, done := ms.requests[r.RequestID]; done {
		if at == index {
			return nil
		}
		return fmt.Errorf("%w: request %s was settled at index %d", ErrDuplicateRequest, r.RequestID, at)
	}
	m := r.Member
	if cur, ok := ms.members[uint64(m.ID)]; ok && m.Incarnation == uuid.Nil {
		m = *cur
	} else if known, ok := ms.lastKnown(uint64(m.ID)); ok && m.Incarnation == uuid.Nil {
		m = known
	}
	ms.requests[r.RequestID] = index
	ms.decidedSeq = max(ms.decidedSeq, r.Seq)
	ms.record(Change{Index: index, Op: r.Op, Member: m, RequestID: r.RequestID, Time: r.Time, Seq: r.Seq,
		Rejected: r.Reason, Code: r.Code})
	return nil
}

func opName(t raftpb.ConfChangeType, ctx *confContext) string {
	switch t {
	case raftpb.ConfChangeAddLearnerNode:
		return "add-learner"
	case raftpb.ConfChangeRemoveNode:
		return "remove"
	}
	if ctx == nil || ctx.Member == nil {
		return "promote"
	}
	return "add"
}

// apply carries out a validated change. Caller holds the lock.
func (ms *membership) apply(cc *raftpb.ConfChangeSingle, ctx *confContext) {
	id := cc.GetNodeId()
	ms.maxID = max(ms.maxID, id)
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		learner := cc.GetType() == raftpb.ConfChangeAddLearnerNode
		m, ok := ms.members[id]
		if !ok {
			m = &Member{ID: raftbridge.ID(id)}
			ms.members[id] = m
		}
		if ctx != nil && ctx.Member != nil {
			m.Name, m.Incarnation, m.ClientURL = ctx.Member.Name, ctx.Member.Incarnation, ctx.Member.ClientURL
			m.PublicKey = ctx.Member.PublicKey
			m.AutoPromote = learner && ctx.Member.AutoPromote
		}
		m.Learner = learner
		if !learner {
			m.AutoPromote = false
		}
	case raftpb.ConfChangeRemoveNode:
		delete(ms.members, id) // the kit tombstoned the ID and its incarnation
	}
}

// membershipImage is the membership part of a snapshot.
type membershipImage struct {
	Version             uint64            `json:"version"`
	Members             []Member          `json:"members"`
	RemovedIDs          []string          `json:"removed_ids,omitempty"`
	RemovedIncarnations []uuid.UUID       `json:"removed_incarnations,omitempty"`
	MaxID               string            `json:"max_id,omitempty"`
	Requests            map[string]uint64 `json:"requests,omitempty"`
	History             []Change          `json:"history,omitempty"`
	Stream              *StreamBinding    `json:"stream,omitempty"`
	// DecidedSeq is the highest stream sequence of a decided request.
	DecidedSeq uint64 `json:"decided_seq,omitempty"`
	// Effective is the index of the last change that took effect (derived
	// from History when absent, in images written before it existed).
	Effective uint64 `json:"effective,omitempty"`
}

// image copies the whole membership state under one read lock, so that a
// reader (a snapshot, /status, the request processor) never sees a torn
// view.
func (ms *membership) image() membershipImage {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	img := membershipImage{Version: ms.version, Members: make([]Member, 0, len(ms.members)),
		DecidedSeq: ms.decidedSeq, Effective: ms.effective}
	for _, m := range ms.members {
		img.Members = append(img.Members, *m)
	}
	slices.SortFunc(img.Members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	ids, incs := ms.dir.Tombstones()
	for _, id := range ids {
		img.RemovedIDs = append(img.RemovedIDs, raftbridge.ID(id).String())
	}
	img.RemovedIncarnations = incs
	if ms.maxID != 0 {
		img.MaxID = raftbridge.ID(ms.maxID).String()
	}
	img.Requests = maps.Clone(ms.requests)
	img.History = slices.Clone(ms.history)
	if ms.stream != nil {
		b := *ms.stream
		img.Stream = &b
	}
	return img
}

// state is the image as the one membership model. Histories written
// before removals and promotions recorded the whole member name only the
// Raft ID there; state fills in the member as the change that added it
// named it, so that every row names the incarnation it concerned. It
// fills them in img.History itself, which image made a copy of for this
// reader alone.
func (img membershipImage) state() MembershipState {
	st := MembershipState{Version: img.Effective, Applied: img.Version, Members: img.Members,
		RemovedIncarnations: img.RemovedIncarnations, Requests: img.Requests, DecidedSeq: img.DecidedSeq}
	for _, s := range img.RemovedIDs {
		id, _ := raftbridge.ParseID(s) // checked by restore, written by image
		st.RemovedIDs = append(st.RemovedIDs, id)
	}
	var maxID raftbridge.ID
	if img.MaxID != "" {
		maxID, _ = raftbridge.ParseID(img.MaxID)
	}
	st.NextID = maxID + 1
	if img.Stream != nil {
		st.Stream = *img.Stream
	}
	added := map[raftbridge.ID]Member{}
	for i := range img.History {
		h := &img.History[i]
		if h.Rejected == "" && (h.Op == OpAdd || h.Op == OpAddLearner) {
			added[h.Member.ID] = h.Member
		} else if m, ok := added[h.Member.ID]; ok && h.Member.Incarnation == uuid.Nil {
			h.Member = m
		}
	}
	st.History = img.History
	return st
}

func (ms *membership) restore(img membershipImage) error {
	members := map[uint64]*Member{}
	for i := range img.Members {
		m := img.Members[i]
		members[uint64(m.ID)] = &m
	}
	dir, err := kitDirectory(img)
	if err != nil {
		return err
	}
	var maxID uint64
	if img.MaxID != "" {
		id, err := raftbridge.ParseID(img.MaxID)
		if err != nil {
			return err
		}
		maxID = uint64(id)
	}
	requests := img.Requests
	if requests == nil {
		requests = map[string]uint64{}
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if err := ms.dir.Restore(dir.Save()); err != nil {
		return err
	}
	ms.members, ms.version = members, img.Version
	ms.maxID, ms.requests, ms.history, ms.stream = maxID, requests, img.History, img.Stream
	ms.decidedSeq, ms.effective = img.DecidedSeq, img.Effective
	if ms.effective == 0 {
		ms.effective = img.Version
		for _, h := range img.History {
			if h.Rejected == "" {
				ms.effective = h.Index
			}
		}
	}
	return nil
}

// kitDirectory builds the kit's directory of an image: its tombstones,
// then its members, refusing an image whose member is tombstoned.
func kitDirectory(img membershipImage) (*raftbridge.MemDirectory, error) {
	dir := raftbridge.NewMemDirectory()
	for _, s := range img.RemovedIDs {
		id, err := raftbridge.ParseID(s)
		if err != nil {
			return nil, err
		}
		dir.Remove(uint64(id))
	}
	for _, inc := range img.RemovedIncarnations {
		dir.TombstoneIncarnation(inc)
	}
	for _, m := range img.Members {
		if !dir.Add(m) {
			return nil, fmt.Errorf("node: membership image: member %s (incarnation %s) is tombstoned or has no incarnation", m.ID, m.Incarnation)
		}
	}
	return dir, nil
}

// peerIncarnations appends to dst the incarnations of the current members
// other than self that seen does not hold yet, and records them in seen.
func (m *membership) peerIncarnations(self uuid.UUID, seen map[uuid.UUID]struct{}, dst []uuid.UUID) []uuid.UUID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, mb := range m.members {
		if _, ok := seen[mb.Incarnation]; ok || mb.Incarnation == self {
			continue
		}
		seen[mb.Incarnation] = struct{}{}
		dst = append(dst, mb.Incarnation)
	}
	return dst
}
