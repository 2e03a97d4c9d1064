package membership

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
)

// FuzzOneRecordChangesNoMembership feeds one arbitrary record, from a
// voter, a stranger or a removed incarnation, into a directory of three
// voters: it must never panic, and no single record may change who the
// members are (that takes a majority of voters).
func FuzzOneRecordChangesNoMembership(f *testing.F) {
	incs := [4]uuid.UUID{uuid.MustParse("01a23593-3154-76dd-82a1-48d10eb50dd2"), uuid.MustParse("01a23593-3c3c-70a3-9128-f5e06639256d"),
		uuid.MustParse("01a23593-3c56-7bc3-b60b-9b7bf14ca85d"), uuid.MustParse("01a23593-3c56-7bc3-b60b-9b7bf14ca85e")}
	seed := func(r Record) {
		b, _ := json.Marshal(r)
		f.Add(b, uint8(1), uint16(7))
	}
	m := Member{ID: 3, Name: "n3", Incarnation: incs[2], PublicKey: keyOf(incs[2])}
	for _, op := range []string{OpRemove, OpAdd, OpAddLearner, OpPromote, OpBaseline} {
		seed(Record{V: 1, Kind: KindCommitted, Time: time.Unix(1, 0), Committed: &Committed{Index: 4, Op: op, Version: 4, Member: m,
			Members: []Member{m}}})
	}
	seed(Record{V: 1, Kind: KindCommitted, Committed: &Committed{Index: 1 << 62, Op: OpRemove, Version: 1, Member: Member{ID: 1}}})
	seed(Record{V: 1, Kind: KindAnnounce, Announce: &Announce{Incarnation: incs[3], Name: "n3", PublicKey: keyOf(incs[3])}})
	seed(Record{V: 1, Kind: KindOutcome, Outcome: &Outcome{RequestID: "x", Status: StatusApplied, Index: 9}})
	f.Add([]byte(`{"v":1,"kind":"committed","committed":{"index":"zz"}}`), uint8(0), uint16(1))

	f.Fuzz(func(t *testing.T, data []byte, src uint8, seq uint16) {
		d := NewDirectory()
		for i := 1; i <= 3; i++ {
			d.Add(committed(incs[0], uint64(i), OpAdd, HexID(i), incs[i-1], ""))
		}
		d.Settle()
		before := d.Sorted()
		r, err := decodeRecord(data, uint64(seq)+100)
		if err != nil {
			r.Invalid, r.Problem = RejectMalformed, err.Error()
		}
		r.Source = incs[int(src)%len(incs)]
		r.Signer = keyOf(r.Source)
		d.Add(r)
		d.Add(r) // the same record again (a replay) is still one signer's word
		d.Settle()
		after := d.Sorted()
		if len(after) != len(before) || len(d.RemovedIDs) != 0 {
			t.Fatalf("one record changed the membership: %+v -> %+v (removed %v)", before, after, d.RemovedIDs)
		}
		for i := range after {
			if after[i].ID != before[i].ID || after[i].Incarnation != before[i].Incarnation || after[i].Learner != before[i].Learner {
				t.Fatalf("one record changed member %s: %+v -> %+v", before[i].ID, before[i], after[i])
			}
		}
		_ = d.Unconfirmed()
	})
}
