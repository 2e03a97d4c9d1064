package raftbridge

import (
	"time"

	"github.com/google/uuid"
)

// Membership is the one model of a cluster's replicated membership, as
// one node applied it: the reference node returns it (node.MembershipState
// is this type), the membership stream's request processor decides
// against it (membership.State is this type), and the CLI and /status show
// it. It is a copy taken at once, never a torn view.
//
// Members and the tombstones are what every user of the kit has; the
// request fields (Requests, DecidedSeq, Stream) are those of the reference
// node's membership processor and stay zero elsewhere.
type Membership struct {
	// Version is the Raft index of the last change that took effect: the
	// version operators see, requests are made against, and the
	// membership stream's committed records carry.
	Version uint64
	// Applied is the Raft index of the last membership entry applied,
	// rejected ones included (Applied >= Version).
	Applied uint64
	// Members are the current members, sorted by ID.
	Members []Member
	// RemovedIDs and RemovedIncarnations are the tombstones: never again
	// a member.
	RemovedIDs          []ID
	RemovedIncarnations []uuid.UUID
	// NextID is the Raft ID the next added member gets: IDs are never
	// reused.
	NextID ID
	// Requests maps decided operator request IDs to the deciding index.
	Requests map[string]uint64
	// History holds every decided change in log order, each naming the
	// member as it was.
	History []Settled
	// Stream is the membership stream the cluster is bound to; zero when
	// unbound.
	Stream StreamBinding
	// DecidedSeq is the highest membership stream sequence of a decided
	// request: a new leader reads requests after it.
	DecidedSeq uint64
}

// Settled is one decided membership change: a change that took effect, or
// a request that was rejected (Rejected and Code set). Its JSON form is
// that of the reference node's snapshots.
type Settled struct {
	Index uint64 `json:"index"`
	// Op is add, add-learner, promote, remove or repair-stream.
	Op string `json:"op"`
	// Member names the member as it was when the change was decided: ID,
	// incarnation, name and key, for removals and promotions too.
	Member    Member    `json:"member"`
	RequestID string    `json:"request_id,omitempty"`
	Time      time.Time `json:"time,omitzero"`
	// Rejected is the reason the change did not take effect, if it did
	// not, and Code its short form (last_voter, not_ready, ...).
	Rejected string `json:"rejected,omitempty"`
	Code     string `json:"code,omitempty"`
	// Seq is the membership stream sequence of the request, 0 if the
	// change did not come from the stream (the bootstrap).
	Seq uint64 `json:"seq,omitempty"`
}

// StreamBinding identifies the JetStream stream that carries a cluster's
// membership records: replicated, so every node can tell when the stream
// it finds is not the one the cluster was bound to (deleted and
// recreated, or another cluster's).
type StreamBinding struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Bound reports whether b names a stream.
func (b StreamBinding) Bound() bool { return b.Name != "" }
