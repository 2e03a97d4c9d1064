package membership

import (
	"cmp"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Directory is the membership rebuilt from a stream's records alone: the
// committed changes give members and tombstones, announcements give names,
// addresses and when an incarnation was last seen.
type Directory struct {
	Version             uint64
	Members             map[HexID]*Member
	RemovedIDs          map[HexID]bool
	RemovedIncarnations map[uuid.UUID]bool
	// Announced holds the newest announcement of each incarnation and its
	// time.
	Announced map[uuid.UUID]AnnounceSeen
}

// AnnounceSeen is an announcement and when it was recorded.
type AnnounceSeen struct {
	Announce
	Time time.Time
}

// Rebuild folds records, in stream order, into a Directory.
func Rebuild(records []Record) *Directory {
	d := &Directory{Members: map[HexID]*Member{}, RemovedIDs: map[HexID]bool{},
		RemovedIncarnations: map[uuid.UUID]bool{}, Announced: map[uuid.UUID]AnnounceSeen{}}
	for _, r := range records {
		switch r.Kind {
		case KindAnnounce:
			d.Announced[r.Announce.Incarnation] = AnnounceSeen{Announce: *r.Announce, Time: r.Time}
		case KindCommitted:
			d.apply(r.Committed)
		}
	}
	return d
}

func (d *Directory) apply(c *Committed) {
	if c.Version > d.Version {
		d.Version = c.Version
	}
	id := c.Member.ID
	switch c.Op {
	case OpAdd, OpAddLearner:
		m := c.Member
		m.Learner = c.Op == OpAddLearner
		d.Members[id] = &m
	case OpPromote:
		if m, ok := d.Members[id]; ok {
			m.Learner = false
		}
	case OpRemove:
		if m, ok := d.Members[id]; ok {
			d.RemovedIncarnations[m.Incarnation] = true
			delete(d.Members, id)
		}
		if c.Member.Incarnation != uuid.Nil {
			d.RemovedIncarnations[c.Member.Incarnation] = true
		}
		d.RemovedIDs[id] = true
	}
}

// Sorted returns the members ordered by Raft ID.
func (d *Directory) Sorted() []Member {
	out := make([]Member, 0, len(d.Members))
	for _, m := range d.Members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// ByName finds the member with a name.
func (d *Directory) ByName(name string) (Member, bool) {
	for _, m := range d.Members {
		if m.Name == name {
			return *m, true
		}
	}
	return Member{}, false
}

// Candidate returns the newest announcement under name of an incarnation
// that is neither a member nor tombstoned: the node waiting to be added.
func (d *Directory) Candidate(name string) (AnnounceSeen, bool) {
	var best AnnounceSeen
	found := false
	for inc, a := range d.Announced {
		if a.Name != name || d.RemovedIncarnations[inc] || d.isMember(inc) {
			continue
		}
		if !found || a.Time.After(best.Time) {
			best, found = a, true
		}
	}
	return best, found
}

func (d *Directory) isMember(inc uuid.UUID) bool {
	for _, m := range d.Members {
		if m.Incarnation == inc {
			return true
		}
	}
	return false
}
