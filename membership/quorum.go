package membership

import (
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// Committed changes take effect on a quorum of attestations.
//
// Every voter writes each membership change it applies, signed, on its own
// members.committed subject (an attestation). One member's credentials
// therefore prove only that member's word: a change takes effect in a
// Directory once a majority of the voters it concerns attested the same
// change at the same Raft index. The voters it concerns are the voters of
// the membership it follows, without the member it removes (which never
// applies its own removal). A single compromised node can thus neither
// remove, add nor freeze anyone unless it alone is that majority, which
// only happens where it already holds half of the votes.

// maxPendingPerSigner bounds the attestations kept per signer while they
// wait for a quorum: honest voters attest in index order and reach a
// quorum within a few records, so only a forger fills its share.
const maxPendingPerSigner = 64

// attestation is one content at one index and who attested it.
type attestation struct {
	rec     Record                // the first record with this content
	signers map[uuid.UUID]signing // by the signer's incarnation
}

// signing is one signer's record of an attestation.
type signing struct {
	seq uint64 // stream sequence
	key string // the key that signed it
}

// pendingChanges holds attestations that have no quorum yet.
type pendingChanges struct {
	byIndex  map[uint64]map[string]*attestation
	bySigner map[uuid.UUID][]uint64 // indexes a signer has pending, ascending
}

func newPendingChanges() pendingChanges {
	return pendingChanges{byIndex: map[uint64]map[string]*attestation{}, bySigner: map[uuid.UUID][]uint64{}}
}

// contentKey identifies what a committed record says, whoever wrote it.
func contentKey(c *Committed) string {
	m := c.Member
	return fmt.Sprintf("%s|%s|%s|%t|%s|%d", c.Op, m.ID, m.Incarnation, m.Learner, m.PublicKey, c.Version)
}

// mayAttest reports why r's signer can never be counted in a quorum: a
// member writing with another key, a learner, a tombstoned incarnation, or
// an incarnation neither a member nor announced with this key. A node
// about to become a member (announced, added at an index not yet
// confirmed here) may attest; its record counts once it is a voter.
func (d *Directory) mayAttest(r Record) (reason, problem string) {
	if d.isMember(r.Source) {
		if reason, problem := d.signedByMember(r, true); reason != "" {
			return reason, "committed change: " + problem
		}
		return "", ""
	}
	switch {
	case d.RemovedIncarnations[r.Source]:
		return RejectNotAuthorized, fmt.Sprintf("committed change: incarnation %s was removed", r.Source)
	case d.Announced[r.Source].PublicKey == "" || d.Announced[r.Source].PublicKey != r.Signer:
		return RejectNotAuthorized, fmt.Sprintf("committed change: incarnation %s is not a member", r.Source)
	}
	return "", ""
}

// attest records r (a voter's verified committed record) and applies every
// change that now has its quorum, in index order.
func (d *Directory) attest(r Record) []Committed {
	c := r.Committed
	key := contentKey(c)
	at := d.pending.byIndex[c.Index]
	if at == nil {
		at = map[string]*attestation{}
		d.pending.byIndex[c.Index] = at
	}
	a := at[key]
	if a == nil {
		a = &attestation{rec: r, signers: map[uuid.UUID]signing{}}
		at[key] = a
	}
	if _, dup := a.signers[r.Source]; !dup {
		a.signers[r.Source] = signing{seq: r.Seq, key: r.Signer}
		d.trackSigner(r.Source, c.Index)
	}
	return d.applyQuorate()
}

// trackSigner remembers that signer has an attestation pending at index,
// dropping its oldest one beyond maxPendingPerSigner.
func (d *Directory) trackSigner(signer uuid.UUID, index uint64) {
	list := d.pending.bySigner[signer]
	if i, found := slices.BinarySearch(list, index); !found {
		list = slices.Insert(list, i, index)
	}
	for len(list) > maxPendingPerSigner {
		old := list[0]
		list = list[1:]
		for key, a := range d.pending.byIndex[old] {
			if sg, ok := a.signers[signer]; ok {
				delete(a.signers, signer)
				d.reject(Record{Seq: sg.seq, Subject: a.rec.Subject, Kind: KindCommitted}, RejectUnconfirmed,
					fmt.Sprintf("change at index %d was never confirmed by a quorum of voters; dropped to bound the pending records", old))
				if len(a.signers) == 0 {
					delete(d.pending.byIndex[old], key)
				}
			}
		}
		if len(d.pending.byIndex[old]) == 0 {
			delete(d.pending.byIndex, old)
		}
	}
	d.pending.bySigner[signer] = list
}

// applyQuorate applies, lowest index first, every pending change whose
// attestations form a quorum, and rejects what a quorate change
// superseded.
func (d *Directory) applyQuorate() []Committed {
	var out []Committed
	for {
		index, a := d.nextQuorate()
		if a == nil {
			return out
		}
		c := a.rec.Committed
		res := *c
		if m, ok := d.Members[c.Member.ID]; ok && c.Op != OpAdd && c.Op != OpAddLearner && res.Member.Incarnation == uuid.Nil {
			// A removal or promotion names the Raft ID; the member it
			// applies to is the one the verified records made.
			res.Member = *m
		}
		d.apply(c)
		d.lastIndex = index
		out = append(out, res)
		d.dropPendingThrough(index, a)
	}
}

// nextQuorate returns the lowest pending index above lastIndex with a
// quorate attestation.
func (d *Directory) nextQuorate() (uint64, *attestation) {
	indexes := make([]uint64, 0, len(d.pending.byIndex))
	for i := range d.pending.byIndex {
		if i > d.lastIndex {
			indexes = append(indexes, i)
		}
	}
	slices.Sort(indexes)
	for _, i := range indexes {
		for _, a := range d.pending.byIndex[i] {
			if d.quorate(a) {
				return i, a
			}
		}
	}
	return 0, nil
}

// quorate reports whether a majority of the voters a's change concerns
// attested it.
func (d *Directory) quorate(a *attestation) bool {
	c := a.rec.Committed
	voters, have := 0, 0
	for id, m := range d.Members {
		if m.Learner || (c.Op == OpRemove && id == c.Member.ID) {
			continue
		}
		voters++
		if sg, ok := a.signers[m.Incarnation]; ok && sg.key == m.PublicKey {
			have++
		}
	}
	return voters > 0 && have > voters/2
}

// dropPendingThrough forgets every attestation at or below index except
// the one applied, rejecting the contents that lost: another content at
// the applied index, or changes below it that never got a quorum.
func (d *Directory) dropPendingThrough(index uint64, applied *attestation) {
	for i, at := range d.pending.byIndex {
		if i > index {
			continue
		}
		for _, a := range at {
			if a == applied {
				continue
			}
			for _, sg := range a.signers {
				d.reject(Record{Seq: sg.seq, Subject: a.rec.Subject, Kind: KindCommitted}, RejectUnconfirmed,
					fmt.Sprintf("%s of member %s at index %d was not confirmed by a quorum of voters; the change confirmed at index %d supersedes it",
						a.rec.Committed.Op, a.rec.Committed.Member.ID, i, index))
			}
		}
		delete(d.pending.byIndex, i)
	}
	for s, list := range d.pending.bySigner {
		j := 0
		for j < len(list) && list[j] <= index {
			j++
		}
		if j == len(list) {
			delete(d.pending.bySigner, s)
		} else {
			d.pending.bySigner[s] = list[j:]
		}
	}
}

// Unconfirmed returns the committed records still waiting for a quorum of
// attestations, by stream sequence: a change the cluster is still
// confirming, or one a single member wrote alone.
func (d *Directory) Unconfirmed() map[uint64]Committed {
	out := map[uint64]Committed{}
	for _, at := range d.pending.byIndex {
		for _, a := range at {
			for _, sg := range a.signers {
				out[sg.seq] = *a.rec.Committed
			}
		}
	}
	return out
}
