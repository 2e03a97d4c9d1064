package membership

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/raftbridge"
)

// FormatVersion is the version of the records this package writes. Readers
// accept records up to this version and refuse newer ones with a clear
// error rather than misreading them.
const FormatVersion = 1

// Kind says what a record is; it is also a subject token.
type Kind string

// Record kinds.
const (
	KindAnnounce  Kind = "announce"
	KindRequest   Kind = "request"
	KindOutcome   Kind = "outcome"
	KindCommitted Kind = "committed"
)

// Ops an operator can request.
const (
	OpAdd        = "add"
	OpAddLearner = "add-learner"
	OpPromote    = "promote"
	OpRemove     = "remove"
	// OpRepairStream asks the leader to bind the cluster to the current
	// stream (after the bound one was lost or recreated) and to publish
	// the replicated membership on it (`raftbus member stream repair`).
	OpRepairStream = "repair-stream"
	// OpBaseline is the committed record that starts a repaired stream:
	// the whole membership at its index (Committed.Members and the
	// tombstones), signed by the leader that repaired it.
	OpBaseline = "baseline"
)

// IsChange reports whether op changes membership (add, add-learner,
// promote, remove): what committed records carry, one per change.
func IsChange(op string) bool {
	switch op {
	case OpAdd, OpAddLearner, OpPromote, OpRemove:
		return true
	}
	return false
}

// Outcome statuses and rejection codes.
const (
	StatusApplied  = "applied"
	StatusRejected = "rejected"

	CodeNoSuchMember = "no_such_member"
	CodeLastVoter    = "last_voter"
	CodeConflict     = "conflict"
	CodeTombstoned   = "tombstoned"
	CodeInvalid      = "invalid"
	CodeNotReady     = "not_ready"
)

// Record is one message of the membership stream.
type Record struct {
	V       int       `json:"v"`
	Kind    Kind      `json:"kind"`
	Time    time.Time `json:"time"`
	Cluster uuid.UUID `json:"cluster"`
	// Group is the Raft group of a group's record (request, outcome,
	// committed change), 0 for the default group and for announcements,
	// which are per host. Signed with the subject, it must name the group
	// of the subject the record is on, so that no record can be replayed
	// into another group; omitted when 0, so that group 0's records are
	// byte for byte those of single-group clusters.
	Group     uint64     `json:"group,omitempty"`
	Announce  *Announce  `json:"announce,omitempty"`
	Request   *Request   `json:"request,omitempty"`
	Outcome   *Outcome   `json:"outcome,omitempty"`
	Committed *Committed `json:"committed,omitempty"`
	// Seq is the record's stream sequence, set when read.
	Seq uint64 `json:"-"`
	// Subject is the subject the record was read from.
	Subject string `json:"-"`
	// Pending is how many matching records followed it in the stream when
	// it was delivered (by Watch): the request processor does not wait on
	// one request while others queue.
	Pending uint64 `json:"-"`
	// Source is the incarnation that wrote the record: the last token of
	// its subject (announcements, outcomes, committed changes; nil for
	// requests, which only the admin may write).
	Source uuid.UUID `json:"-"`
	// Signer is the public key whose valid signature the record carries,
	// "" if it has none. A valid signature alone proves nothing: readers
	// (Directory) check that the signer is a member that could have written
	// the record.
	Signer string `json:"-"`
	// Invalid is why the record cannot be used at all (one of the Reject
	// constants), "" if it is well formed and, where needed, validly
	// signed; Problem explains it. Such records are delivered, so that
	// readers can count and show them, but never acted upon.
	Invalid string `json:"-"`
	Problem string `json:"-"`
}

// HexID is a Raft ID, which travels in JSON as a 16-digit hex string
// (raftbridge.ID: one formatter for every package).
type HexID = raftbridge.ID

// Member describes a member in records: the one membership record of
// raftbus (raftbridge.Member), the same the node replicates.
type Member = raftbridge.Member

// Announce says an incarnation came up.
type Announce struct {
	Incarnation uuid.UUID `json:"incarnation"`
	Name        string    `json:"name"`
	RaftID      HexID     `json:"raft_id,omitempty"`
	Software    string    `json:"software,omitempty"`
	Protocol    int       `json:"protocol"`
	ClientURL   string    `json:"client_url,omitempty"`
	// DataDir and Command help the operator: `member add` prints how to
	// start the node if it is not running.
	DataDir string `json:"data_dir,omitempty"`
	Host    string `json:"host,omitempty"`
	// PublicKey is the incarnation's nkey public key; the announcement is
	// signed with it (set by Stream.Announce).
	PublicKey string `json:"public_key,omitempty"`
}

// Request is an operator's ask.
type Request struct {
	ID            string    `json:"id"`
	Op            string    `json:"op"`
	Name          string    `json:"name,omitempty"`
	Incarnation   uuid.UUID `json:"incarnation,omitzero"`
	RaftID        HexID     `json:"raft_id,omitempty"`
	ClientURL     string    `json:"client_url,omitempty"`
	ExpectVersion uint64    `json:"expect_version,omitempty"`
	By            string    `json:"by,omitempty"`
	// PublicKey of the incarnation to add, from its verified announcement.
	PublicKey string `json:"public_key,omitempty"`
	// PromoteWhenCaughtUp, with add-learner, asks the leader to promote the
	// learner by itself once its log is within a bound of the leader's;
	// the promotion is decided under AutoPromoteID(raft ID).
	PromoteWhenCaughtUp bool `json:"promote_when_caught_up,omitempty"`
}

// Outcome settles a request.
type Outcome struct {
	RequestID string `json:"request_id"`
	Status    string `json:"status"`
	Code      string `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Index     uint64 `json:"index,omitempty"`
	RaftID    HexID  `json:"raft_id,omitempty"`
	Leader    HexID  `json:"leader,omitempty"`
}

// Committed records one membership change committed through Raft. The
// member directory can be rebuilt from these records alone.
type Committed struct {
	Index     uint64 `json:"index"`
	Op        string `json:"op"`
	Member    Member `json:"member"`
	RequestID string `json:"request_id,omitempty"`
	Version   uint64 `json:"version"`
	// Members, RemovedIDs and RemovedIncarnations are set only in a
	// baseline (OpBaseline): the membership at Index.
	Members             []Member    `json:"members,omitempty"`
	RemovedIDs          []HexID     `json:"removed_ids,omitempty"`
	RemovedIncarnations []uuid.UUID `json:"removed_incarnations,omitempty"`
}

func decodeRecord(data []byte, seq uint64) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%w: sequence %d: %v", ErrBadRecord, seq, err)
	}
	if r.V < 1 || r.V > FormatVersion {
		return r, fmt.Errorf("%w: sequence %d has format version %d; this build reads 1..%d (upgrade raftbus)", ErrBadRecord, seq, r.V, FormatVersion)
	}
	ok := (r.Kind == KindAnnounce && r.Announce != nil) || (r.Kind == KindRequest && r.Request != nil) ||
		(r.Kind == KindOutcome && r.Outcome != nil) || (r.Kind == KindCommitted && r.Committed != nil)
	if !ok {
		return r, fmt.Errorf("%w: sequence %d: kind %q without its body", ErrBadRecord, seq, r.Kind)
	}
	r.Seq = seq
	return r, nil
}
