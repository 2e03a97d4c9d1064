package membership

import (
	"testing"

	"github.com/google/uuid"
)

// A repaired stream starts with a baseline: accepted as its first
// committed record when signed by a voter it names with that key, refused
// anywhere else or from anyone else.
func TestBaselineStartsARepairedStreamOnly(t *testing.T) {
	n1, n2, gone := newParty(t), newParty(t), uuid.New()
	b := &Committed{Index: 40, Op: OpBaseline, Version: 40, Members: []Member{n1.member(1, "n1"), n2.member(5, "n5")},
		RemovedIDs: []HexID{2}, RemovedIncarnations: []uuid.UUID{gone}}
	rec := func(p party, seq uint64, c *Committed) Record {
		return Record{Kind: KindCommitted, Committed: c, Seq: seq, Source: p.inc, Signer: p.pub}
	}
	d := NewDirectory()
	if got := d.Add(rec(n2, 1, b)); len(got) != 1 || len(d.Members) != 2 || !d.RemovedIDs[2] || !d.RemovedIncarnations[gone] || d.LastIndex() != 40 {
		t.Fatalf("baseline: %+v, members %v, removed %v", got, d.Members, d.RemovedIDs)
	}
	// A second baseline is refused, and the stream goes on from the first.
	if got := d.Add(rec(n1, 2, b)); len(got) != 0 || len(d.Rejected) != 1 || d.Rejected[0].Reason != RejectNotAuthorized {
		t.Fatalf("second baseline: %+v, rejected %+v", got, d.Rejected)
	}
	// Signed by someone it does not name as a voter.
	stranger := newParty(t)
	d = NewDirectory()
	if got := d.Add(rec(stranger, 1, b)); len(got) != 0 || len(d.Members) != 0 || len(d.Rejected) != 1 {
		t.Fatalf("stranger's baseline: %+v", got)
	}
	// After a bootstrap run.
	d = NewDirectory()
	d.Add(rec(n1, 1, &Committed{Index: 1, Op: OpAdd, Member: n1.member(1, "n1"), Version: 1}))
	if got := d.Add(rec(n1, 2, b)); len(got) != 0 || d.RemovedIDs[2] {
		t.Fatalf("baseline after the bootstrap: %+v", got)
	}
}
