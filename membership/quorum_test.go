package membership

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// quorumFixture is a directory bootstrapped with three voters n1..n3 whose
// records are numbered in stream order as they are added.
type quorumFixture struct {
	t   *testing.T
	d   *Directory
	inc [4]uuid.UUID // inc[1..3]: the voters
	seq uint64
}

func newQuorumFixture(t *testing.T) *quorumFixture {
	f := &quorumFixture{t: t, d: NewDirectory()}
	for i := 1; i <= 3; i++ {
		f.inc[i] = uuid.New()
	}
	for i := 1; i <= 3; i++ {
		f.add(committed(f.inc[1], uint64(i), OpAdd, HexID(i), f.inc[i], ""))
	}
	f.d.Settle()
	if len(f.d.Members) != 3 {
		t.Fatalf("bootstrap: %d members", len(f.d.Members))
	}
	return f
}

func (f *quorumFixture) add(r Record) []Committed {
	f.seq++
	r.Seq = f.seq
	return f.d.Add(r)
}

func (f *quorumFixture) announce(inc uuid.UUID) {
	f.add(Record{V: 1, Kind: KindAnnounce, Time: time.Now(), Source: inc, Signer: keyOf(inc),
		Announce: &Announce{Incarnation: inc, Name: "new", PublicKey: keyOf(inc)}})
}

// Issue 9: one member's own credentials signed a removal of another member,
// published on its own subject, and the victim stopped (and stopped again
// on every restart). A committed change now takes effect only once a
// majority of the voters it concerns attested it.
func TestOneMembersRecordChangesNothing(t *testing.T) {
	f := newQuorumFixture(t)
	if got := f.add(committed(f.inc[2], 4, OpRemove, 3, f.inc[3], "")); len(got) != 0 {
		t.Fatalf("a removal signed by one voter of three took effect: %+v", got)
	}
	if _, ok := f.d.Members[3]; !ok || f.d.RemovedIDs[3] {
		t.Fatal("member 3 removed on one member's word")
	}
	if len(f.d.Unconfirmed()) != 1 {
		t.Fatalf("unconfirmed %v", f.d.Unconfirmed())
	}
	// The same change attested by the other remaining voter is real.
	got := f.add(committed(f.inc[1], 4, OpRemove, 3, f.inc[3], ""))
	if len(got) != 1 || got[0].Op != OpRemove || !f.d.RemovedIDs[3] || !f.d.RemovedIncarnations[f.inc[3]] {
		t.Fatalf("quorate removal: %+v, removed %v", got, f.d.RemovedIDs)
	}
	if f.d.LastIndex() != 4 || len(f.d.Unconfirmed()) != 0 || len(f.d.Rejected) != 0 {
		t.Fatalf("last index %d, unconfirmed %v, rejected %+v", f.d.LastIndex(), f.d.Unconfirmed(), f.d.Rejected)
	}
}

// A forged change at a huge index used to freeze the directory (every
// real change after it was "already in effect"). Now it waits alone and
// real changes keep taking effect.
func TestForgedHighIndexFreezesNothing(t *testing.T) {
	f := newQuorumFixture(t)
	f.add(committed(f.inc[2], 1<<40, OpRemove, 1, f.inc[1], ""))
	n4 := uuid.New()
	f.announce(n4)
	f.add(committed(f.inc[1], 5, OpAdd, 4, n4, "n4"))
	if got := f.add(committed(f.inc[3], 5, OpAdd, 4, n4, "n4")); len(got) != 1 {
		t.Fatalf("a quorate add after a forged high index did not take effect: %+v", got)
	}
	if _, ok := f.d.Members[1]; !ok || len(f.d.Members) != 4 || f.d.LastIndex() != 5 {
		t.Fatalf("members %v, last index %d", f.d.Members, f.d.LastIndex())
	}
}

// Two contents at one index: the quorate one wins and the other is
// rejected as unconfirmed, so history shows the forgery.
func TestCompetingChangeAtAnIndexIsRejected(t *testing.T) {
	f := newQuorumFixture(t)
	forged := committed(f.inc[2], 4, OpRemove, 3, f.inc[3], "")
	f.add(forged)
	forgedSeq := f.seq
	n4 := uuid.New()
	f.announce(n4)
	f.add(committed(f.inc[1], 4, OpAddLearner, 4, n4, "n4"))
	f.add(committed(f.inc[3], 4, OpAddLearner, 4, n4, "n4"))
	if _, ok := f.d.Members[3]; !ok {
		t.Fatal("the forged removal took effect")
	}
	if m, ok := f.d.Members[4]; !ok || !m.Learner {
		t.Fatalf("the quorate add did not take effect: %+v", f.d.Members)
	}
	rej, ok := f.d.RejectedAt(forgedSeq)
	if !ok || rej.Reason != RejectUnconfirmed {
		t.Fatalf("the losing record: %+v %v", rej, ok)
	}
}

// A forger fills only its own share of the pending records.
func TestPendingRecordsAreBoundedPerSigner(t *testing.T) {
	f := newQuorumFixture(t)
	for i := uint64(0); i < 200; i++ {
		f.add(committed(f.inc[2], 1000+i, OpRemove, 1, f.inc[1], ""))
	}
	if n := len(f.d.Unconfirmed()); n != maxPendingPerSigner {
		t.Fatalf("%d records pending, want %d", n, maxPendingPerSigner)
	}
	if got := f.d.RejectedCounts()[RejectUnconfirmed]; got != 200-maxPendingPerSigner {
		t.Fatalf("%d rejected as unconfirmed", got)
	}
	// Honest voters are unaffected.
	f.add(committed(f.inc[1], 4, OpPromote, 3, uuid.Nil, ""))
	if got := f.add(committed(f.inc[3], 4, OpRemove, 2, f.inc[2], "")); len(got) != 0 {
		t.Fatal("two different contents formed a quorum")
	}
	if got := f.add(committed(f.inc[3], 4, OpPromote, 3, uuid.Nil, "")); len(got) != 1 {
		t.Fatalf("honest quorum: %+v", got)
	}
}

// The member a change removes is not counted: in a two-voter cluster the
// remaining voter alone confirms the removal of the other.
func TestRemovalQuorumExcludesTheRemoved(t *testing.T) {
	d := NewDirectory()
	a, b := uuid.New(), uuid.New()
	d.Add(committed(a, 1, OpAdd, 1, a, "n1"))
	d.Add(committed(a, 2, OpAdd, 2, b, "n2"))
	d.Settle()
	if got := d.Add(committed(a, 3, OpRemove, 2, b, "n2")); len(got) != 1 || !d.RemovedIDs[2] {
		t.Fatalf("removal by the only remaining voter: %+v", got)
	}
	// Records of a removed incarnation are never counted again.
	r := committed(b, 4, OpAdd, 9, uuid.New(), "x")
	r.Seq = 99
	d.Add(r)
	if rej, ok := d.RejectedAt(99); !ok || rej.Reason != RejectNotAuthorized {
		t.Fatalf("a removed incarnation's record: %+v %v", rej, ok)
	}
}

// A node being added may attest changes after its own addition before
// that addition is confirmed here: its record counts once it is a voter.
func TestNewVoterAttestsBeforeItsAddIsConfirmed(t *testing.T) {
	f := newQuorumFixture(t)
	n4 := uuid.New()
	f.announce(n4)
	f.add(committed(f.inc[1], 4, OpAdd, 4, n4, "n4"))
	f.add(committed(n4, 5, OpRemove, 3, f.inc[3], ""))
	f.add(committed(f.inc[1], 5, OpRemove, 3, f.inc[3], ""))
	if _, ok := f.d.Members[4]; ok {
		t.Fatal("the add took effect on one attestation")
	}
	// n2 confirms index 4; then index 5 has n1 and n4 of the voters
	// {n1, n2, n4} that remain after removing n3.
	got := f.add(committed(f.inc[2], 4, OpAdd, 4, n4, "n4"))
	if len(got) != 2 || !f.d.RemovedIDs[3] || len(f.d.Rejected) != 0 {
		t.Fatalf("applied %+v, removed %v, rejected %+v", got, f.d.RemovedIDs, f.d.Rejected)
	}
}
