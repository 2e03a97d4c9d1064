package membership

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Directory is the membership rebuilt from a stream's records alone: the
// committed changes give members and tombstones, announcements give names,
// addresses, keys and when an incarnation was last seen.
//
// Only records that could have been written by who they claim are used
// (Add): a committed change takes effect once a majority of the voters it
// concerns attested it, each with its own key on its own subject (see
// quorum.go); an outcome with the key of a
// member; an announcement with the key it announces (and, for a member,
// the key in its member record). The first committed changes (Raft indexes
// 1, 2, ... from the cluster's bootstrap, written by one signer) are
// accepted together when their signer is a voter among them: that is
// trust on first use of the stream. Everything else is skipped and listed
// in Rejected, never acted upon.
type Directory struct {
	Version             uint64
	Members             map[HexID]*Member
	RemovedIDs          map[HexID]bool
	RemovedIncarnations map[uuid.UUID]bool
	// Announced holds the newest accepted announcement of each incarnation
	// and its time.
	Announced map[uuid.UUID]AnnounceSeen
	// Rejected lists the records that were skipped, in stream order.
	Rejected []RejectedRecord

	lastIndex  uint64         // Raft index of the last accepted committed change
	boot       []Record       // the bootstrap run, until it is judged
	bootJudged bool           // the bootstrap run is over
	rejected   map[uint64]int // Seq -> index in Rejected
	counts     map[string]int // reason -> number of records
	pending    pendingChanges // attested changes without a quorum yet
}

// RejectedRecord is a record a Directory skipped.
type RejectedRecord struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Kind    Kind   `json:"kind,omitempty"`
	// Reason is one of the Reject constants; Problem explains it.
	Reason  string `json:"reason"`
	Problem string `json:"problem,omitempty"`
}

// AnnounceSeen is an announcement and when it was recorded.
type AnnounceSeen struct {
	Announce
	Time time.Time
}

// NewDirectory returns an empty directory to feed records to with Add.
func NewDirectory() *Directory {
	return &Directory{Members: map[HexID]*Member{}, RemovedIDs: map[HexID]bool{},
		RemovedIncarnations: map[uuid.UUID]bool{}, Announced: map[uuid.UUID]AnnounceSeen{},
		rejected: map[uint64]int{}, counts: map[string]int{}, pending: newPendingChanges()}
}

// Rebuild folds records, in stream order, into a Directory.
func Rebuild(records []Record) *Directory {
	d := NewDirectory()
	for _, r := range records {
		d.Add(r)
	}
	d.Settle()
	return d
}

// Add folds the next record, in stream order, into the directory: a
// record that passes the checks above takes effect, any other is listed in
// Rejected. It returns the committed changes that took effect (more than
// one when the bootstrap run is judged; none for other kinds).
func (d *Directory) Add(r Record) []Committed {
	if r.Invalid != "" {
		d.reject(r, r.Invalid, r.Problem)
		return nil
	}
	switch r.Kind {
	case KindAnnounce:
		d.announce(r)
	case KindOutcome:
		// An outcome is judged against the members so far: a bootstrap
		// run still open is judged first (its signer's outcomes follow it).
		applied := d.Settle()
		if reason, problem := d.judgeOutcome(r); reason != "" {
			d.reject(r, reason, problem)
		}
		return applied
	case KindCommitted:
		return d.committed(r)
	}
	return nil
}

// Settle judges a bootstrap run still open at the end of the records, and
// returns the changes that took effect.
func (d *Directory) Settle() []Committed {
	if d.bootJudged || len(d.boot) == 0 {
		return nil
	}
	return d.judgeBoot()
}

// LastIndex is the Raft index of the newest committed change that took
// effect.
func (d *Directory) LastIndex() uint64 { return d.lastIndex }

// RejectedCounts returns how many records were rejected, by reason.
func (d *Directory) RejectedCounts() map[string]int { return maps.Clone(d.counts) }

// RejectedAt returns the rejection of the record at stream sequence seq.
func (d *Directory) RejectedAt(seq uint64) (RejectedRecord, bool) {
	i, ok := d.rejected[seq]
	if !ok {
		return RejectedRecord{}, false
	}
	return d.Rejected[i], true
}

func (d *Directory) reject(r Record, reason, problem string) {
	if _, dup := d.rejected[r.Seq]; dup && r.Seq != 0 {
		return
	}
	d.rejected[r.Seq] = len(d.Rejected)
	d.Rejected = append(d.Rejected, RejectedRecord{Seq: r.Seq, Subject: r.Subject, Kind: r.Kind, Reason: reason, Problem: problem})
	d.counts[reason]++
}

func (d *Directory) announce(r Record) {
	a := r.Announce
	// An incarnation's key is fixed by its member record or, before it is
	// a member, by its first accepted announcement.
	if key := d.keyOf(a.Incarnation); key != "" && key != r.Signer {
		d.reject(r, RejectWrongSource, fmt.Sprintf("announcement of %s signed by %s, but its key is %s", a.Incarnation, r.Signer, key))
		return
	}
	d.Announced[a.Incarnation] = AnnounceSeen{Announce: *a, Time: r.Time}
}

// keyOf returns the key the directory knows for an incarnation.
func (d *Directory) keyOf(inc uuid.UUID) string {
	for _, m := range d.Members {
		if m.Incarnation == inc && m.PublicKey != "" {
			return m.PublicKey
		}
	}
	return d.Announced[inc].PublicKey
}

// signedByMember reports whether r's source is a member (a voter if
// voter) whose recorded key signed r.
func (d *Directory) signedByMember(r Record, voter bool) (reason, problem string) {
	for _, m := range d.Members {
		if m.Incarnation != r.Source {
			continue
		}
		switch {
		case m.PublicKey == "":
			return RejectNotAuthorized, fmt.Sprintf("member %s (incarnation %s) has no key on record", m.ID, m.Incarnation)
		case m.PublicKey != r.Signer:
			return RejectWrongSource, fmt.Sprintf("signed by %s, but member %s (incarnation %s) has key %s", r.Signer, m.ID, m.Incarnation, m.PublicKey)
		case voter && m.Learner:
			return RejectNotAuthorized, fmt.Sprintf("written by learner %s, which cannot commit changes", m.ID)
		}
		return "", ""
	}
	return RejectNotAuthorized, fmt.Sprintf("incarnation %s is not a member", r.Source)
}

// judgeOutcome checks an outcome record without changing the directory.
// A nil directory checks only the signature.
func (d *Directory) judgeOutcome(r Record) (reason, problem string) {
	if r.Invalid != "" {
		return r.Invalid, r.Problem
	}
	if r.Kind != KindOutcome || r.Outcome == nil {
		return RejectMalformed, "not an outcome"
	}
	if d == nil {
		return "", ""
	}
	return d.signedByMember(r, false)
}

func (d *Directory) committed(r Record) []Committed {
	c := r.Committed
	if c.Op == OpBaseline {
		return d.baseline(r)
	}
	if !d.bootJudged {
		if d.extendsBoot(r) {
			d.boot = append(d.boot, r)
			return nil
		}
		applied := d.Settle()
		d.bootJudged = true
		return append(applied, d.committed(r)...)
	}
	if c.Index <= d.lastIndex {
		// Written again (by a later leader, say): already in effect.
		return nil
	}
	if reason, problem := d.mayAttest(r); reason != "" {
		d.reject(r, reason, problem)
		return nil
	}
	return d.attest(r)
}

// baseline applies a repaired stream's first committed record: the whole
// membership, accepted (trust on first use, like the bootstrap run) when
// it is the stream's first committed change and its signer is a voter it
// names with that key. Anywhere else it is rejected.
func (d *Directory) baseline(r Record) []Committed {
	c := r.Committed
	if d.bootJudged || len(d.boot) > 0 || d.lastIndex > 0 {
		d.reject(r, RejectNotAuthorized, "a baseline is accepted only as the first committed record of a stream")
		return nil
	}
	ok := false
	for _, m := range c.Members {
		if m.ID == 0 || m.Incarnation == uuid.Nil {
			d.reject(r, RejectMalformed, "baseline member without a Raft ID or incarnation")
			return nil
		}
		ok = ok || (!m.Learner && m.Incarnation == r.Source && m.PublicKey != "" && m.PublicKey == r.Signer)
	}
	if !ok {
		d.reject(r, RejectNotAuthorized, fmt.Sprintf("baseline signed by %s (incarnation %s), which is not a voter it names", r.Signer, r.Source))
		return nil
	}
	d.bootJudged = true
	for _, m := range c.Members {
		m := m
		d.Members[m.ID] = &m
	}
	for _, id := range c.RemovedIDs {
		d.RemovedIDs[id] = true
	}
	for _, inc := range c.RemovedIncarnations {
		d.RemovedIncarnations[inc] = true
	}
	d.Version = max(d.Version, c.Version)
	d.lastIndex = c.Index
	return []Committed{*c}
}

// extendsBoot reports whether r continues the bootstrap run: additions at
// Raft indexes 1, 2, 3, ... by one signer.
func (d *Directory) extendsBoot(r Record) bool {
	c := r.Committed
	if c.Op != OpAdd && c.Op != OpAddLearner {
		return false
	}
	if c.Index != uint64(len(d.boot))+1 {
		return false
	}
	return len(d.boot) == 0 || (r.Signer == d.boot[0].Signer && r.Source == d.boot[0].Source)
}

// judgeBoot applies the bootstrap run if its signer is a voter it adds
// with that key, and rejects it all otherwise.
func (d *Directory) judgeBoot() []Committed {
	run := d.boot
	d.boot, d.bootJudged = nil, true
	signer := run[0]
	ok := false
	for _, r := range run {
		m := r.Committed.Member
		if r.Committed.Op == OpAdd && m.Incarnation == signer.Source && m.PublicKey != "" && m.PublicKey == signer.Signer {
			ok = true
		}
	}
	if !ok {
		for _, r := range run {
			d.reject(r, RejectNotAuthorized, fmt.Sprintf("bootstrap change signed by %s (incarnation %s), which is not a voter it adds", signer.Signer, signer.Source))
		}
		return nil
	}
	var out []Committed
	for _, r := range run {
		d.apply(r.Committed)
		d.lastIndex = r.Committed.Index
		out = append(out, *r.Committed)
	}
	return out
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
			m.Learner, m.AutoPromote = false, false
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
