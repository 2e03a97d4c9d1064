package node

import "errors"

// Errors returned by the node. Callers match them with errors.Is.
var (
	// ErrStopped is returned by calls on a node that has been stopped.
	ErrStopped = errors.New("node: stopped")
	// ErrNoLeader is returned when a proposal or read cannot proceed because
	// the cluster has no known leader.
	ErrNoLeader = errors.New("node: no leader")
	// ErrProposalDropped is returned when Raft dropped a proposal (for
	// example during a leadership change); the caller may retry.
	ErrProposalDropped = errors.New("node: proposal dropped")
	// ErrTooLarge is returned for a proposal larger than the configured
	// maximum.
	ErrTooLarge = errors.New("node: proposal too large")
	// ErrRemoved is returned once this node learned it was removed from the
	// cluster.
	ErrRemoved = errors.New("node: removed from the cluster")
	// ErrNotLeader is returned by operations only the leader performs.
	ErrNotLeader = errors.New("node: not the leader")

	// Membership change rejections. A rejected change is settled in the
	// replicated history like an applied one, with its reason.

	// ErrNoSuchMember: the change names a Raft ID that is not a member.
	ErrNoSuchMember = errors.New("node: no such member")
	// ErrLastVoter: the change would remove the last voting member.
	ErrLastVoter = errors.New("node: cannot remove the last voter")
	// ErrTombstoned: the Raft ID or incarnation was removed and can never
	// return.
	ErrTombstoned = errors.New("node: removed identities can never return")
	// ErrInvalidChange: the change is inconsistent with the membership
	// (promoting a voter, adding an incarnation twice, reusing an ID).
	ErrInvalidChange = errors.New("node: invalid membership change")
	// ErrDuplicateRequest: the operator request was already settled.
	ErrDuplicateRequest = errors.New("node: membership request already settled")
)
