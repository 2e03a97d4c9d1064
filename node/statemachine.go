package node

// StateMachine is the application state replicated by a node.
//
// The node calls all three methods from its single apply goroutine, never
// concurrently. Apply sees every committed normal entry exactly once, in log
// order, from the index after the last snapshot it was restored from; after
// a restart the node restores the latest snapshot and replays the log.
type StateMachine interface {
	// Apply applies the data of the committed entry at index. The result is
	// handed to the proposer of that entry if it is waiting on this node.
	// An error is the command's own failure (reported to the proposer); it
	// must not leave the state half-changed. An error wrapping
	// ErrStateMachine says instead that the state machine itself failed
	// and its state can no longer be trusted: the node stops applying and
	// stops (doc.go, contract 9).
	Apply(index uint64, data []byte) (result any, err error)
	// Snapshot returns the serialised state as of the last applied index.
	Snapshot() ([]byte, error)
	// Restore replaces the whole state with a snapshot's data. A failure
	// stops the node (ErrStateMachine): the state may be half restored.
	Restore(data []byte) error
}
