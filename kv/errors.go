package kv

import "errors"

// Errors returned by the kv package. Callers match them with errors.Is; the
// returned errors wrap them with details.
var (
	// ErrBadCommand is returned by DecodeCommand, and by Store.Apply for an
	// entry whose data is not a valid command. Such an entry is skipped (its
	// index still counts as applied) identically on every node.
	ErrBadCommand = errors.New("kv: malformed command")
	// ErrStaleIndex is returned by Store.Apply for an index at or below the
	// applied index: the entry was already applied (or the caller replays
	// the log wrongly) and the state is left unchanged.
	ErrStaleIndex = errors.New("kv: index already applied")
	// ErrBadSnapshot is returned by Store.Restore and Store.RestoreFrom for
	// data that is not a complete, intact snapshot; the state is left
	// unchanged.
	ErrBadSnapshot = errors.New("kv: malformed snapshot")
)

// errBadVarint is wrapped into ErrBadCommand and ErrBadSnapshot errors.
var errBadVarint = errors.New("truncated or overlong uvarint")
