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
	// ErrStorage: the node stopped itself because its Raft storage failed
	// (a write or fsync error, a full disk). Err and waiting callers
	// report it wrapped together with ErrStopped and the cause.
	ErrStorage = errors.New("node: storage failed")
	// ErrStateMachine: the node stopped itself because its state machine
	// failed: restoring a snapshot failed, or Apply returned an error
	// wrapping ErrStateMachine (the state machine's way of saying that its
	// state can no longer be trusted). Nothing is applied after the
	// failure. Reported like ErrStorage.
	ErrStateMachine = errors.New("node: state machine failed")
	// ErrInvalidMessage is returned by Process for a network message that
	// no correct peer sends and that would make Raft panic; the bridge
	// counts it as a drop.
	ErrInvalidMessage = errors.New("node: invalid raft message")

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
