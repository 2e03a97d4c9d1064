package node

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/raftbus/raftbus/raftbridge"
)

// At-most-once application of proposals (the rules are in doc.go, "Proposal
// sessions"). Every proposal names its proposer's session (Raft ID, epoch)
// and a sequence number; the replicated sessions table below records which
// sequence numbers each session has applied, so a duplicated, replayed or
// re-proposed entry is not applied twice. The table is owned by the apply
// goroutine and travels in snapshots.

const (
	// sessionWindow is how many sequence numbers below a session's highest
	// applied one are remembered individually. A proposal that far behind
	// the newest applied one from the same process is refused.
	sessionWindow = 4096
	// sessionsPerID bounds the sessions kept per proposing Raft ID: a node
	// process that restarts opens a new session, and the oldest is forgotten.
	sessionsPerID = 4
)

var (
	errDuplicateProposal = errors.New("node: proposal already applied")
	errStaleProposal     = errors.New("node: proposal too old to tell whether it was applied")
	errStaleSession      = errors.New("node: proposal from a forgotten session")
	errNotMember         = errors.New("node: proposal from a Raft ID that is not a member")
)

// session is what the table keeps of one proposer session.
type session struct {
	Epoch uint64 `json:"epoch"`
	// Hi is the highest applied sequence number; bit i of Seen says whether
	// Hi-i was applied (bit 0 is Hi itself).
	Hi   uint64   `json:"hi"`
	Seen []uint64 `json:"seen"`
}

// sessionTable maps a proposing Raft ID to its most recent sessions, sorted
// by epoch, at most sessionsPerID of them.
type sessionTable map[uint64][]*session

// admit decides whether the proposal (id, epoch, seq) may be applied and,
// if so, records it. The decision depends only on the table and on
// memberAt (whether a Raft ID is a member at the proposal's index), both
// the same on every replica at the same index, so every replica decides
// alike. Only members' sessions are kept: the table is bounded by the
// membership, whatever Raft IDs entries claim.
func (t sessionTable) admit(id, epoch, seq uint64, memberAt func(uint64) bool) error {
	if !memberAt(id) {
		delete(t, id)
		return fmt.Errorf("%w: %s", errNotMember, raftbridge.ID(id).String())
	}
	ss, known := t[id]
	if !known {
		// A new proposer: forget those that are no longer members.
		for other := range t {
			if !memberAt(other) {
				delete(t, other)
			}
		}
	}
	i, found := slices.BinarySearchFunc(ss, epoch, func(s *session, e uint64) int { return cmp.Compare(s.Epoch, e) })
	if !found {
		// Sessions are forgotten only by eviction of the oldest: with fewer
		// than sessionsPerID kept, no session of id was ever forgotten, so an
		// unknown one is new; with the table full, one older than every kept
		// session may have been forgotten and is refused.
		if len(ss) >= sessionsPerID && i == 0 {
			return fmt.Errorf("%w: %s epoch %d, oldest kept %d", errStaleSession, raftbridge.ID(id).String(), epoch, ss[0].Epoch)
		}
		s := &session{Epoch: epoch, Hi: seq, Seen: make([]uint64, sessionWindow/64)}
		s.Seen[0] = 1
		ss = slices.Insert(ss, i, s)
		if len(ss) > sessionsPerID {
			ss = slices.Delete(ss, 0, len(ss)-sessionsPerID)
		}
		t[id] = ss
		return nil
	}
	return ss[i].mark(seq)
}

// mark records seq as applied, or says why it must not be.
func (s *session) mark(seq uint64) error {
	if seq > s.Hi {
		shiftLeft(s.Seen, seq-s.Hi)
		s.Hi = seq
		s.Seen[0] |= 1
		return nil
	}
	back := s.Hi - seq
	if back >= sessionWindow {
		return fmt.Errorf("%w: sequence %d, newest applied %d", errStaleProposal, seq, s.Hi)
	}
	w, b := back/64, back%64
	if s.Seen[w]&(1<<b) != 0 {
		return fmt.Errorf("%w: sequence %d", errDuplicateProposal, seq)
	}
	s.Seen[w] |= 1 << b
	return nil
}

// shiftLeft moves every bit of the window n places towards higher offsets
// (older sequence numbers), dropping those that fall out.
func shiftLeft(w []uint64, n uint64) {
	if n >= uint64(len(w))*64 {
		clear(w)
		return
	}
	words, rem := int(n/64), uint(n%64)
	for i := len(w) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w[j] << rem
			if rem > 0 && j-1 >= 0 {
				v |= w[j-1] >> (64 - rem)
			}
		}
		w[i] = v
	}
}

// maxEpoch is the highest epoch recorded for id, or 0.
func (t sessionTable) maxEpoch(id uint64) uint64 {
	ss := t[id]
	if len(ss) == 0 {
		return 0
	}
	return ss[len(ss)-1].Epoch
}

// clone returns a deep copy, for a snapshot image.
func (t sessionTable) clone() sessionTable {
	out := make(sessionTable, len(t))
	for id, ss := range t {
		cp := make([]*session, len(ss))
		for i, s := range ss {
			cp[i] = &session{Epoch: s.Epoch, Hi: s.Hi, Seen: slices.Clone(s.Seen)}
		}
		out[id] = cp
	}
	return out
}

// sessionsImage is the sessions table as kept in a snapshot.
type sessionsImage struct {
	ID       string     `json:"id"`
	Sessions []*session `json:"sessions"`
}

func (t sessionTable) image() []sessionsImage {
	ids := make([]uint64, 0, len(t))
	for id := range t {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]sessionsImage, 0, len(ids))
	c := t.clone()
	for _, id := range ids {
		out = append(out, sessionsImage{ID: raftbridge.ID(id).String(), Sessions: c[id]})
	}
	return out
}

func restoreSessions(img []sessionsImage) (sessionTable, error) {
	t := sessionTable{}
	for _, si := range img {
		rid, err := raftbridge.ParseID(si.ID)
		if err != nil {
			return nil, err
		}
		id := uint64(rid)
		ss := slices.Clone(si.Sessions)
		ss = slices.DeleteFunc(ss, func(s *session) bool { return s == nil })
		slices.SortFunc(ss, func(a, b *session) int { return cmp.Compare(a.Epoch, b.Epoch) })
		if len(ss) > sessionsPerID {
			ss = ss[len(ss)-sessionsPerID:]
		}
		for _, s := range ss {
			if len(s.Seen) > sessionWindow/64 {
				s.Seen = s.Seen[:sessionWindow/64]
			}
			s.Seen = append(s.Seen, make([]uint64, sessionWindow/64-len(s.Seen))...)
		}
		if len(ss) > 0 {
			t[id] = ss
		}
	}
	return t, nil
}
