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
)
