package node

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The snapshot image and the ConfChange context travel in logs and
// snapshots: these files were written by the build before node.Member
// became raftbridge.Member (commit b8b7441; see the members, history with
// a rejection, a repair and tombstones in them), and must decode and
// encode byte for byte.

func TestGoldenSnapshotImage(t *testing.T) {
	old, err := os.ReadFile("testdata/golden_snapshot_v2.bin")
	if err != nil {
		t.Fatal(err)
	}
	img, sm, err := decodeSnapshot(old)
	if err != nil {
		t.Fatal(err)
	}
	ms := newMembership()
	if err := ms.restore(img.members); err != nil {
		t.Fatal(err)
	}
	if got := ms.list(); len(got) != 2 || got[0].ClientURL != "http://a" || got[1].ID != 2 {
		t.Fatalf("members %+v", got)
	}
	if !ms.RemovedID(3) || len(ms.history) != 8 || ms.history[5].Code != "no_such_member" {
		t.Fatalf("tombstones or history lost: %+v", ms.history)
	}
	again, err := encodeSnapshot(snapshotImage{members: ms.image(), sessions: img.sessions}, sm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, old) {
		t.Fatalf("re-encoded\n%q\nwant\n%q", again, old)
	}
}

func TestGoldenConfContext(t *testing.T) {
	old, err := os.ReadFile("testdata/golden_conf_context.json")
	if err != nil {
		t.Fatal(err)
	}
	var ctx confContext
	if err := json.Unmarshal(old, &ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Member == nil || ctx.Member.ID != 4 || !ctx.Member.AutoPromote || ctx.Request != 77 {
		t.Fatalf("decoded %+v", ctx)
	}
	again, err := jsonMarshal(ctx)
	if err != nil || !bytes.Equal(again, old) {
		t.Fatalf("re-encoded %s (%v), want %s", again, err, old)
	}
}
