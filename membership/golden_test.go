package membership

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// TestGoldenRecords: records written by the build before Member and HexID
// became raftbridge's (commit b8b7441) still decode, and encode byte for
// byte: the stream is append-only, so its old records are read forever.
func TestGoldenRecords(t *testing.T) {
	old, err := os.ReadFile("testdata/golden_records.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(old), []byte("\n"))
	if len(lines) != 6 {
		t.Fatalf("%d records", len(lines))
	}
	for i, line := range lines {
		r, err := decodeRecord(line, uint64(i+1))
		if err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
		b, err := json.Marshal(r)
		if err != nil || !bytes.Equal(b, line) {
			t.Fatalf("record %d re-encoded\n%s (%v)\nwant\n%s", i+1, b, err, line)
		}
	}
	r, _ := decodeRecord(lines[1], 2)
	if c := r.Committed; len(c.Members) != 2 || c.Members[1].ID != 0xabc || c.RemovedIDs[1] != 0x10 {
		t.Fatalf("baseline %+v", c)
	}
}
