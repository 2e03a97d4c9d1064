package membership

import "testing"

// An outcome right after the bootstrap run (an add-learner's outcome,
// say, whose committed record extends the run) was judged while the run
// was still open, against no members, and `member history` showed the
// leader's real outcome as not_authorized. The run is judged first now.
func TestOutcomeAfterOpenBootstrapRunAccepted(t *testing.T) {
	n1 := newParty(t)
	d := NewDirectory()
	d.Add(Record{Kind: KindCommitted, Seq: 1, Source: n1.inc, Signer: n1.pub,
		Committed: &Committed{Index: 1, Op: OpAdd, Member: n1.member(1, "n1"), Version: 1}})
	got := d.Add(Record{Kind: KindOutcome, Seq: 2, Source: n1.inc, Signer: n1.pub,
		Outcome: &Outcome{RequestID: "r", Status: StatusApplied, Index: 1}})
	if len(d.Rejected) != 0 || len(got) != 1 || len(d.Members) != 1 {
		t.Fatalf("rejected %+v, applied %+v", d.Rejected, got)
	}
}
