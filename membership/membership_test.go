package membership

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/raftbridge"
)

// keyOf is a stand-in public key per incarnation: Directory compares keys,
// the stream checks signatures.
func keyOf(inc uuid.UUID) string { return "U" + inc.String() }

// committed is a record written (and signed) by the member with
// incarnation by.
func committed(by uuid.UUID, index uint64, op string, id HexID, inc uuid.UUID, name string) Record {
	key := ""
	if inc != uuid.Nil {
		key = keyOf(inc)
	}
	return Record{V: 1, Kind: KindCommitted, Source: by, Signer: keyOf(by), Seq: index,
		Committed: &Committed{Index: index, Op: op, Version: index,
			Member: Member{ID: id, Incarnation: inc, Name: name, PublicKey: key}}}
}

func TestRebuildFromCommittedRecords(t *testing.T) {
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	recs := []Record{
		committed(b, 1, OpAdd, 1, a, "n1"),
		committed(b, 2, OpAdd, 2, b, "n2"),
		committed(b, 3, OpAddLearner, 3, c, "n3"),
		{V: 1, Kind: KindAnnounce, Time: time.Unix(10, 0), Source: d, Signer: keyOf(d), Announce: &Announce{Incarnation: d, Name: "n2", PublicKey: keyOf(d)}},
		committed(a, 5, OpPromote, 3, uuid.Nil, ""),
		committed(b, 5, OpPromote, 3, uuid.Nil, ""),
		committed(a, 6, OpRemove, 2, b, "n2"),
		committed(c, 6, OpRemove, 2, b, "n2"),
	}
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	dir := Rebuild(recs)
	if len(dir.Rejected) != 0 {
		t.Fatalf("rejected %+v", dir.Rejected)
	}
	if dir.Version != 6 || len(dir.Members) != 2 {
		t.Fatalf("version %d, members %v", dir.Version, dir.Members)
	}
	if !dir.RemovedIDs[2] || !dir.RemovedIncarnations[b] {
		t.Fatalf("removal not tombstoned: %v %v", dir.RemovedIDs, dir.RemovedIncarnations)
	}
	if dir.Members[3].Learner {
		t.Fatal("promoted learner still a learner")
	}
	cand, ok := dir.Candidate("n2")
	if !ok || cand.Incarnation != d {
		t.Fatalf("candidate for n2: %+v %v; want the new incarnation", cand, ok)
	}
	if _, ok := dir.Candidate("n1"); ok {
		t.Fatal("a member's own announcement offered as candidate")
	}
}

func TestDecodeRecordRejectsBadInput(t *testing.T) {
	good, _ := json.Marshal(Record{V: 1, Kind: KindRequest, Request: &Request{ID: "x", Op: OpRemove, RaftID: 2}})
	if _, err := decodeRecord(good, 7); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"not json":       "{",
		"future version": `{"v":99,"kind":"request","request":{"id":"x"}}`,
		"no version":     `{"kind":"request","request":{"id":"x"}}`,
		"missing body":   `{"v":1,"kind":"committed"}`,
		"unknown kind":   `{"v":1,"kind":"gossip"}`,
		"bad raft id":    `{"v":1,"kind":"request","request":{"id":"x","raft_id":"zz"}}`,
	} {
		if _, err := decodeRecord([]byte(data), 3); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v, want ErrBadRecord", name, err)
		}
	}
}

func TestHexIDJSON(t *testing.T) {
	b, _ := json.Marshal(Member{ID: 0xabc})
	if !strings.Contains(string(b), `"id":"0000000000000abc"`) {
		t.Fatalf("%s", b)
	}
	var m Member
	if err := json.Unmarshal(b, &m); err != nil || m.ID != 0xabc {
		t.Fatalf("%v %v", m.ID, err)
	}
	if _, err := raftbridge.ParseID("0"); err == nil {
		t.Fatal("0 accepted as a member ID")
	}
}

func TestRejectionErrorMatchesErrRejected(t *testing.T) {
	var err error = &RejectionError{Code: CodeLastVoter, Reason: "last"}
	if !errors.Is(err, ErrRejected) {
		t.Fatal("RejectionError does not match ErrRejected")
	}
}

// The node records a removal under the Raft ID alone; the directory names
// the member it removes, so a node can match its exact incarnation.
func TestRemovalByIDNamesTheMember(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	d := NewDirectory()
	d.Add(committed(a, 1, OpAdd, 1, a, "n1"))
	d.Add(committed(a, 4, OpAdd, 2, b, "n2"))
	got := d.Add(committed(a, 7, OpRemove, 2, uuid.Nil, ""))
	if len(got) != 1 || got[0].Member.Incarnation != b || got[0].Op != OpRemove {
		t.Fatalf("took effect: %+v", got)
	}
}
