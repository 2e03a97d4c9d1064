package membership

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func committed(index uint64, op string, id HexID, inc uuid.UUID, name string) Record {
	return Record{V: 1, Kind: KindCommitted, Committed: &Committed{Index: index, Op: op, Version: index,
		Member: Member{ID: id, Incarnation: inc, Name: name}}}
}

func TestRebuildFromCommittedRecords(t *testing.T) {
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	recs := []Record{
		committed(1, OpAdd, 1, a, "n1"),
		committed(2, OpAdd, 2, b, "n2"),
		committed(3, OpAddLearner, 3, c, "n3"),
		{V: 1, Kind: KindAnnounce, Time: time.Unix(10, 0), Announce: &Announce{Incarnation: d, Name: "n2"}},
		committed(4, OpPromote, 3, uuid.Nil, ""),
		committed(5, OpRemove, 2, b, "n2"),
	}
	dir := Rebuild(recs)
	if dir.Version != 5 || len(dir.Members) != 2 {
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
	if _, err := ParseHexID("0"); err == nil {
		t.Fatal("0 accepted as a member ID")
	}
}

func TestRejectionErrorMatchesErrRejected(t *testing.T) {
	var err error = &RejectionError{Code: CodeLastVoter, Reason: "last"}
	if !errors.Is(err, ErrRejected) {
		t.Fatal("RejectionError does not match ErrRejected")
	}
}
