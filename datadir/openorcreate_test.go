package datadir

import (
	"errors"

	"github.com/google/uuid"
)

// openOrCreate is the load-or-create sequence a node runs at start-up, as
// the tests exercise it; the server does its own (it also records the
// first start).
// openOrCreate loads dir's identity, or creates one (with want's ClusterID,
// RaftID and Name) if it has none, and checks it against want. created
// reports whether it was created.
//
// An existing identity adopts, durably, the ClusterID, RaftID and Name of
// want where it has none yet: a node created before it knew its cluster or
// Raft ID records them on the next start. Set fields are never changed; a
// disagreement is an ErrMismatch. If want names an Incarnation and the
// directory has no identity, the directory was wiped (or is the wrong one):
// that is an ErrMismatch too, never a silent new incarnation.
func openOrCreate(dir string, want Expect) (id *Identity, created bool, err error) {
	id, err = Load(dir)
	switch {
	case errors.Is(err, ErrNoIdentity):
		if want.Incarnation != uuid.Nil {
			return nil, false, &MismatchError{Dir: dir, Field: "incarnation", Want: want.Incarnation.String(), Source: want.source()}
		}
		id, err = Create(dir, Identity{ClusterID: want.ClusterID, RaftID: want.RaftID, Name: want.Name})
		if err != nil {
			return nil, false, err
		}
		return id, true, nil
	case err != nil:
		return nil, false, err
	}
	if err := id.Check(want); err == nil {
		return id, false, nil
	}
	adopt := (id.ClusterID == uuid.Nil && want.ClusterID != uuid.Nil) ||
		(id.RaftID == 0 && want.RaftID != 0) ||
		(id.Name == "" && want.Name != "")
	if adopt {
		id, err = update(dir, func(cur *Identity) error {
			if cur.ClusterID == uuid.Nil {
				cur.ClusterID = want.ClusterID
			}
			if cur.RaftID == 0 {
				cur.RaftID = want.RaftID
			}
			if cur.Name == "" {
				cur.Name = want.Name
			}
			return cur.Check(want)
		})
		if err != nil {
			return nil, false, err
		}
	}
	return id, false, id.Check(want)
}
