package datadir

import (
	"errors"
	"fmt"
)

// Errors returned by the package. Callers match them with errors.Is.
var (
	// ErrMismatch is returned when a data directory's identity disagrees
	// with what the caller expects. The error is a *MismatchError naming
	// both sides.
	ErrMismatch = errors.New("datadir: identity mismatch")
	// ErrLocked is returned by Lock when another process (or another Lock
	// call in this one) holds the directory.
	ErrLocked = errors.New("datadir: data directory is locked")
	// ErrNoIdentity is returned by Load when the directory has no identity
	// file. The error also matches fs.ErrNotExist.
	ErrNoIdentity = errors.New("datadir: no identity")
	// ErrBadFormat is returned when the identity file cannot be parsed, has
	// an unknown format version or holds invalid values.
	ErrBadFormat = errors.New("datadir: bad identity file")
	// ErrExists is returned by Create when the directory already has an
	// identity.
	ErrExists = errors.New("datadir: identity already exists")
	// ErrNotEmpty is returned by Create when the directory holds other data
	// but no identity: data of unknown origin must not be adopted by a new
	// incarnation.
	ErrNotEmpty = errors.New("datadir: directory has data but no identity")
	// ErrNoKey is returned by LoadKey when the identity names no key (a
	// directory from before keys; see EnsureKey) or its seed file is gone.
	ErrNoKey = errors.New("datadir: no identity key")
	// ErrBadKey is returned by LoadKey when the seed file is unreadable,
	// not private to its owner, or not the seed of the identity's key.
	ErrBadKey = errors.New("datadir: bad identity key")
)

// MismatchError describes one disagreement between an identity and an
// Expect. It matches ErrMismatch.
type MismatchError struct {
	Dir      string    // the data directory
	Field    string    // "cluster", "raft ID", "incarnation" or "name"
	Have     string    // the value in the directory ("" if unset)
	Want     string    // the expected value
	Source   string    // who expected it (Expect.Source)
	Identity *Identity // the directory's identity; nil if it has none
}

// Error names both sides, for example:
//
//	datadir: data directory /x belongs to cluster A (raft ID 0000000000000002, incarnation U, name "n2") but --cluster says cluster B
func (e *MismatchError) Error() string {
	dir := e.Dir
	if dir == "" {
		dir = "(unknown)"
	}
	if e.Identity == nil {
		return fmt.Sprintf("datadir: data directory %s has no identity but %s says %s %s (was it wiped?)",
			dir, e.Source, e.Field, e.Want)
	}
	return fmt.Sprintf("datadir: data directory %s %s but %s says %s %s",
		dir, e.Identity.describe(), e.Source, e.Field, e.Want)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }
