package cli

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// historyStory describes the records of `member history` as they were
// when written: a removal names the member it removed (Raft ID, name,
// incarnation), an announcement by a removed incarnation says it is
// tombstoned. It is fed only records the directory accepted, in stream
// order.
type historyStory struct {
	members    map[membership.HexID]membership.Member // as last added
	removed    map[uuid.UUID]membership.Member        // tombstoned incarnations
	removedIDs map[membership.HexID]membership.Member
	requests   map[string]membership.Request
	committed  map[uint64]bool // indexes of changes already shown
	// group is the Raft group shown: an announcement's Raft ID is group
	// 0's, so in any other group it says nothing about membership.
	group uint64
}

func newHistoryStory() *historyStory {
	return &historyStory{members: map[membership.HexID]membership.Member{}, removed: map[uuid.UUID]membership.Member{},
		removedIDs: map[membership.HexID]membership.Member{}, requests: map[string]membership.Request{},
		committed: map[uint64]bool{}}
}

// who names a member: "0000000000000002 n2 (incarnation …)".
func who(m membership.Member) string {
	name := m.Name
	if name == "" {
		name = "(no name)"
	}
	if m.Incarnation == uuid.Nil {
		return fmt.Sprintf("%s %s", m.ID, name)
	}
	return fmt.Sprintf("%s %s (incarnation %s)", m.ID, name, m.Incarnation)
}

// member completes m from what the history knew of its Raft ID.
func (h *historyStory) member(m membership.Member) membership.Member {
	if m.Incarnation != uuid.Nil && m.Name != "" {
		return m
	}
	known, ok := h.members[m.ID]
	if !ok {
		known, ok = h.removedIDs[m.ID]
	}
	if !ok {
		return m
	}
	if m.Incarnation == uuid.Nil || m.Incarnation == known.Incarnation {
		return known
	}
	return m
}

// describe returns a record's DETAIL and BY columns, and folds it in.
func (h *historyStory) describe(r membership.Record) (detail, by string) {
	switch r.Kind {
	case membership.KindAnnounce:
		a := r.Announce
		if old, gone := h.removed[a.Incarnation]; gone && h.group != 0 {
			return fmt.Sprintf("%s (incarnation %s) came up at %s; TOMBSTONED in this group: removed as member %s, it never rejoins this group under this incarnation",
				a.Name, a.Incarnation, a.ClientURL, old.ID), a.Host
		} else if gone {
			return fmt.Sprintf("%s (incarnation %s) came up at %s, but it is TOMBSTONED: removed as member %s; its traffic is dropped and it stops itself",
				a.Name, a.Incarnation, a.ClientURL, old.ID), a.Host
		}
		status := "not a member yet"
		if h.group != 0 {
			status = "a host; not a member of this group yet"
			for _, m := range h.members {
				if m.Incarnation == a.Incarnation {
					status = "member " + m.ID.String() + " of this group"
				}
			}
		} else if a.RaftID != 0 {
			if m, ok := h.members[a.RaftID]; ok && m.Incarnation == a.Incarnation {
				status = "member " + a.RaftID.String()
			} else {
				status = "claims member " + a.RaftID.String() + ", not on record"
			}
		}
		return fmt.Sprintf("%s (incarnation %s, %s) came up at %s", a.Name, a.Incarnation, status, a.ClientURL), a.Host
	case membership.KindRequest:
		if r.Invalid != "" {
			return "REJECTED (" + r.Invalid + "): " + r.Problem, r.Subject
		}
		q := r.Request
		h.requests[q.ID] = *q
		target := q.Name
		if q.RaftID != 0 {
			target = who(h.member(membership.Member{ID: q.RaftID, Name: q.Name}))
		} else if q.Incarnation != uuid.Nil {
			target = fmt.Sprintf("%s (incarnation %s)", q.Name, q.Incarnation)
		}
		return fmt.Sprintf("request %s: %s %s", q.ID, q.Op, target), q.By
	case membership.KindOutcome:
		o := r.Outcome
		op := ""
		if q, ok := h.requests[o.RequestID]; ok {
			op = q.Op + " "
		}
		if o.Status == membership.StatusRejected {
			return fmt.Sprintf("request %s (%s) rejected (%s): %s", o.RequestID, trimOp(op), o.Code, o.Reason), "leader " + o.Leader.String()
		}
		target := ""
		if o.RaftID != 0 {
			target = ": " + op + who(h.member(membership.Member{ID: o.RaftID}))
		}
		return fmt.Sprintf("request %s applied at index %d%s", o.RequestID, o.Index, target), "leader " + o.Leader.String()
	case membership.KindCommitted:
		c := r.Committed
		m := h.member(c.Member)
		if h.committed[c.Index] {
			// Every voter writes each change it applied; the change took
			// effect with the first record shown.
			return fmt.Sprintf("confirms index %d: %s %s", c.Index, c.Op, who(m)), h.signer(r)
		}
		h.committed[c.Index] = true
		switch c.Op {
		case membership.OpAdd, membership.OpAddLearner:
			h.members[m.ID] = m
		case membership.OpRemove:
			delete(h.members, m.ID)
			h.removedIDs[m.ID] = m
			if m.Incarnation != uuid.Nil {
				h.removed[m.Incarnation] = m
			}
		}
		return fmt.Sprintf("committed at index %d: %s %s", c.Index, c.Op, who(m)), h.signer(r)
	}
	return "", ""
}

// signer names the member that wrote r, by its incarnation.
func (h *historyStory) signer(r membership.Record) string {
	for _, known := range []map[membership.HexID]membership.Member{h.members, h.removedIDs} {
		for _, m := range known {
			if m.Incarnation == r.Source && r.Source != uuid.Nil {
				return m.ID.String() + " " + m.Name
			}
		}
	}
	return "incarnation " + r.Source.String()
}

func trimOp(op string) string {
	if op == "" {
		return "?"
	}
	return op[:len(op)-1]
}
