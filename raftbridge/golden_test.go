package raftbridge

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The kit's formats travel in users' logs and snapshots: these files were
// written by the build before Member became the one membership model
// (commit b8b7441), and must still decode and encode byte for byte.

func TestGoldenConfContext(t *testing.T) {
	old, err := os.ReadFile("testdata/golden_conf_context.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeConfContext(old)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != 0x1234 || m.Name != "n1" || m.PublicKey == "" {
		t.Fatalf("decoded %+v", m)
	}
	again, err := EncodeConfContext(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, old) {
		t.Fatalf("re-encoded\n%s\nwant\n%s", again, old)
	}
}

func TestGoldenDirImage(t *testing.T) {
	old, err := os.ReadFile("testdata/golden_dir_image.json")
	if err != nil {
		t.Fatal(err)
	}
	d := NewMemDirectory()
	if err := d.Restore(old); err != nil {
		t.Fatal(err)
	}
	if !d.RemovedID(3) || d.Version() != 5 || len(d.Members()) != 2 {
		t.Fatalf("restored %v, version %d", d.Members(), d.Version())
	}
	if got := d.Save(); !bytes.Equal(got, old) {
		t.Fatalf("saved\n%s\nwant\n%s", got, old)
	}
}

// TestMemberJSON: Member's JSON is what node.Member and membership.Member
// each wrote before they became one type (the same shape: a hex "id",
// "" for none), so old records and snapshots read back unchanged.
func TestMemberJSON(t *testing.T) {
	for _, old := range []string{
		`{"id":"0000000000000001","name":"n1","incarnation":"01000000-0000-0000-0000-000000000040","client_url":"http://a","learner":true,"public_key":"UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","auto_promote":true}`,
		`{"id":"","incarnation":"00000000-0000-0000-0000-000000000000"}`,
		`{"id":"0000000000000abc","incarnation":"02000000-0000-0000-0000-000000000040"}`,
	} {
		var m Member
		if err := json.Unmarshal([]byte(old), &m); err != nil {
			t.Fatalf("%s: %v", old, err)
		}
		b, err := json.Marshal(m)
		if err != nil || string(b) != old {
			t.Fatalf("re-encoded %s (%v), want %s", b, err, old)
		}
	}
	var m Member
	for _, bad := range []string{`{"id":"xyz"}`, `{"id":12}`, `{"id":"1ffffffffffffffff"}`} {
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if id, err := ParseID("abc"); err != nil || id != 0xabc || id.String() != "0000000000000abc" {
		t.Errorf("ParseID(abc) = %v, %v", id, err)
	}
	for _, bad := range []string{"", "0", "g", "-1"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}
