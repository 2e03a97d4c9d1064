package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/raftbridge"
)

// changeWithContext is change with the node's context encoded in it.
func changeWithContext(t *testing.T, typ raftpb.ConfChangeType, id uint64, ctx *confContext) *raftpb.ConfChangeV2 {
	t.Helper()
	cc := change(typ, id)
	if ctx != nil {
		b, err := json.Marshal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cc.Context = b
	}
	return cc
}

// confEntry is the log entry of a ConfChange with the node's context.
func confEntry(t *testing.T, index uint64, typ raftpb.ConfChangeType, id uint64, ctx *confContext) *raftpb.Entry {
	t.Helper()
	data, err := proto.Marshal(changeWithContext(t, typ, id, ctx))
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(1), Type: raftpb.EntryConfChangeV2.Enum(), Data: data}
}

// systemEntry is the log entry of a system command.
func systemEntry(t *testing.T, index uint64, cmd systemCommand) *raftpb.Entry {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(1), Data: encodeTagged(entryTagSystem, index, b)}
}

// A restart primes the directory from the committed log before the apply
// loop replays it. Priming must replay every membership entry, rejections
// included: a request a leader rejected (index 3) and a later leader,
// not yet aware of it, proposed as a change (index 4) must stay rejected
// on the restarted node as it is on every node that applied the log in
// order. Priming ConfChanges alone applied the change here and nowhere
// else, and a snapshot taken after it recorded that divergent image.
func TestRestartAfterRejectionKeepsTheVerdict(t *testing.T) {
	leader, self, third := newMember(t, 1), newMember(t, 2), newMember(t, 3)
	ents := []*raftpb.Entry{
		confEntry(t, 1, raftpb.ConfChangeAddNode, 1, &confContext{Member: &leader}),
		confEntry(t, 2, raftpb.ConfChangeAddNode, 2, &confContext{Member: &self}),
		systemEntry(t, 3, systemCommand{Reject: &Rejection{RequestID: "r1", Seq: 5, Op: OpAdd, Member: third,
			Code: "not_ready", Reason: "the operator's request timed out"}}),
		confEntry(t, 4, raftpb.ConfChangeAddNode, 3, &confContext{Member: &third, RequestID: "r1", Seq: 5}),
	}
	// What every node that applied the log in order holds.
	want := newMembership()
	for _, e := range ents {
		if cc, ctx, ok := decodeConfChange(e); ok {
			_ = want.decide(e.GetIndex(), cc, ctx)
			continue
		}
		_, _, body, _ := decodeEntry(e.GetData())
		cmd, _ := decodeSystem(e.GetIndex(), body)
		_ = want.system(e.GetIndex(), cmd)
	}
	if _, ok := want.members[3]; ok {
		t.Fatal("applied in order, the rejected request's change took effect")
	}

	st := NewMemoryStorage()
	if err := st.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(4)}, ents); err != nil {
		t.Fatal(err)
	}
	n, _ := follower(t, st, newMapSM())
	if got := n.members.image(); !slices.Equal(memberIDs(got.Members), []raftbridge.ID{1, 2}) {
		t.Fatalf("primed members %v, want [1 2]", memberIDs(got.Members))
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.applied.current() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d, want 4", n.applied.current())
		}
		time.Sleep(5 * time.Millisecond)
	}
	got, exp := n.Membership(), want.image().state()
	if !slices.Equal(memberIDs(got.Members), memberIDs(exp.Members)) || got.Version != exp.Version || got.Applied != exp.Applied {
		t.Fatalf("restarted node: members %v, version %d/%d; in-order: members %v, version %d/%d",
			memberIDs(got.Members), got.Version, got.Applied, memberIDs(exp.Members), exp.Version, exp.Applied)
	}
	if fmt.Sprint(got.History) != fmt.Sprint(exp.History) {
		t.Fatalf("history differs:\n restarted %v\n in order  %v", got.History, exp.History)
	}
}

// A snapshot taken at a restart before the apply loop has passed the last
// primed membership entry would carry its effects in an image of an
// earlier index; a rejection primes the image without moving the
// membership version, so the deferral must look at it too.
func TestSnapshotDeferredWhileRejectionPrimedAhead(t *testing.T) {
	leader, self := newMember(t, 1), newMember(t, 2)
	ents := []*raftpb.Entry{
		confEntry(t, 1, raftpb.ConfChangeAddNode, 1, &confContext{Member: &leader}),
		confEntry(t, 2, raftpb.ConfChangeAddNode, 2, &confContext{Member: &self}),
		systemEntry(t, 3, systemCommand{Reject: &Rejection{RequestID: "r1", Op: OpRemove, Member: Member{ID: 1},
			Code: "last_voter", Reason: "no"}}),
	}
	st := NewMemoryStorage()
	if err := st.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(3)}, ents); err != nil {
		t.Fatal(err)
	}
	n, _ := follower(t, st, newMapSM())
	if err := n.snapshot(2, &raftpb.ConfState{Voters: []uint64{1, 2}}); !errors.Is(err, errSnapshotDeferred) {
		t.Fatalf("snapshot at 2 with a rejection primed at 3: %v", err)
	}
}

func memberIDs(ms []Member) []raftbridge.ID {
	var ids []raftbridge.ID
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}
