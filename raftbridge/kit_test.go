package raftbridge

import (
	"bytes"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const testKey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

func addChange(t *testing.T, typ raftpb.ConfChangeType, m Member) *raftpb.ConfChange {
	t.Helper()
	ctx, err := EncodeConfContext(m)
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.ConfChange{Type: typ.Enum(), NodeId: proto.Uint64(uint64(m.ID)), Context: ctx}
}

func removeChange(id uint64) *raftpb.ConfChange {
	return &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(id)}
}

// mustApply applies cc and fails unless the directory accepted it and
// handed back cc for raft.
func mustApply(t *testing.T, d *MemDirectory, cc raftpb.ConfChangeI) {
	t.Helper()
	got, err := ApplyConfChange(d, cc)
	if err != nil || got != cc {
		t.Fatalf("ApplyConfChange: %v (change for raft %v)", err, got)
	}
}

// mustRefuse applies cc and fails unless the directory refused it without
// changing, and handed raft a change it ignores.
func mustRefuse(t *testing.T, d *MemDirectory, cc raftpb.ConfChangeI, want error) {
	t.Helper()
	before := d.Save()
	got, err := ApplyConfChange(d, cc)
	if !errors.Is(err, ErrRefused) || (want != nil && !errors.Is(err, want)) {
		t.Fatalf("ApplyConfChange: error %v, want %v", err, want)
	}
	if got.AsV2().GetChanges()[0].GetNodeId() != 0 {
		t.Fatalf("a refused change gives raft %v, not a change of ID 0", got)
	}
	if after := d.Save(); !bytes.Equal(before, after) {
		t.Fatalf("a refused change changed the directory:\n%s\n%s", before, after)
	}
}

func TestConfContextRoundTrip(t *testing.T) {
	m := Member{ID: 0xabc, Incarnation: uuid.New(), PublicKey: testKey, Name: "n4"}
	b, err := EncodeConfContext(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeConfContext(b)
	if err != nil || got != m {
		t.Fatalf("got %+v, %v; want %+v", got, err, m)
	}
	// The reference node's context (node.confContext) carries more fields;
	// they are ignored.
	nodeCtx := `{"request":3,"member":{"id":"0000000000000abc","name":"n4","incarnation":"` + m.Incarnation.String() +
		`","public_key":"` + testKey + `","learner":true},"request_id":"r1","time":"2026-12-02T07:00:00Z"}`
	if got, err := DecodeConfContext([]byte(nodeCtx)); err != nil || got != m {
		t.Fatalf("node context: got %+v, %v", got, err)
	}
	for name, bad := range map[string]string{
		"empty":       ``,
		"not json":    `{"member":`,
		"no member":   `{}`,
		"id 0":        `{"member":{"id":"0","incarnation":"` + m.Incarnation.String() + `"}}`,
		"decimal id":  `{"member":{"id":"x12","incarnation":"` + m.Incarnation.String() + `"}}`,
		"nil inc":     `{"member":{"id":"1","incarnation":"00000000-0000-0000-0000-000000000000"}}`,
		"bad key":     `{"member":{"id":"1","incarnation":"` + m.Incarnation.String() + `","public_key":"SA..."}}`,
		"trailing":    `{"member":{"id":"1","incarnation":"` + m.Incarnation.String() + `"}} {}`,
		"oversized":   `{"member":{"id":"1","incarnation":"` + m.Incarnation.String() + `","name":"` + strings.Repeat("x", MaxConfContextBytes) + `"}}`,
		"long name":   `{"member":{"id":"1","incarnation":"` + m.Incarnation.String() + `","name":"` + strings.Repeat("x", 300) + `"}}`,
		"number type": `{"member":{"id":1,"incarnation":"` + m.Incarnation.String() + `"}}`,
	} {
		if _, err := DecodeConfContext([]byte(bad)); !errors.Is(err, ErrBadContext) {
			t.Errorf("%s: error %v, want ErrBadContext", name, err)
		}
	}
	if _, err := EncodeConfContext(Member{ID: 1}); !errors.Is(err, ErrBadContext) {
		t.Fatalf("encoding a member without incarnation: %v", err)
	}
}

func TestApplyConfChangeMembersAndTombstones(t *testing.T) {
	d := NewMemDirectory()
	a := Member{ID: 1, Incarnation: uuid.New(), PublicKey: testKey, Name: "a"}
	b := Member{ID: 2, Incarnation: uuid.New()}
	c := Member{ID: 3, Incarnation: uuid.New(), Name: "c"}
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, a))
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, b))
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddLearnerNode, c))
	if got, ok := d.Member(1); !ok || got != a {
		t.Fatalf("member 1: %+v %v", got, ok)
	}
	// Promoting the learner: AddNode of a member needs no context.
	mustApply(t, d, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(3)})
	if got, _ := d.Member(3); got != c {
		t.Fatalf("promotion changed member 3: %+v", got)
	}
	v := d.Version()
	mustApply(t, d, removeChange(2))
	if d.Version() != v+1 || !d.RemovedID(2) || !d.RemovedIncarnation(b.Incarnation) {
		t.Fatal("remove did not tombstone ID and incarnation")
	}
	if _, ok := d.Incarnation(2); ok {
		t.Fatal("removed member still a member")
	}

	fresh := uuid.New()
	mustRefuse(t, d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 2, Incarnation: fresh}), nil)         // tombstoned ID
	mustRefuse(t, d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 9, Incarnation: b.Incarnation}), nil) // tombstoned incarnation
	mustRefuse(t, d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 1, Incarnation: fresh}), nil)         // held by another incarnation
	mustRefuse(t, d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 9, Incarnation: a.Incarnation}), nil) // another member's incarnation
	mustRefuse(t, d, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(9)}, ErrBadContext)
	mustRefuse(t, d, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(9), Context: []byte("{")}, ErrBadContext)
	wrongID := addChange(t, raftpb.ConfChangeAddNode, Member{ID: 8, Incarnation: fresh})
	wrongID.NodeId = proto.Uint64(9)
	mustRefuse(t, d, wrongID, ErrBadContext)
	// All or nothing: the remove of 3 is not applied with the refused add.
	ctx, _ := EncodeConfContext(Member{ID: 2, Incarnation: fresh})
	mustRefuse(t, d, &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{
		{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(3)},
		{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(2)},
	}, Context: ctx}, nil)
	if _, err := ApplyConfChange(d, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("nil change: %v", err)
	}
	if _, err := ApplyConfChange(d, (*raftpb.ConfChange)(nil)); !errors.Is(err, ErrRefused) {
		t.Fatalf("typed nil change: %v", err)
	}
	// A remove of an ID that never was a member still tombstones it.
	mustApply(t, d, removeChange(7))
	if !d.RemovedID(7) {
		t.Fatal("ID 7 not tombstoned")
	}
	// A replay (a restart re-applies the log after the last snapshot)
	// changes nothing, not even the version.
	v = d.Version()
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, a))
	mustApply(t, d, removeChange(2))
	if d.Version() != v {
		t.Fatalf("a replayed change moved the version from %d to %d", v, d.Version())
	}
	// Leaving a joint configuration changes nothing here.
	mustApply(t, d, &raftpb.ConfChangeV2{})
}

// TestRefusedChangeIsIgnoredByRaft checks what ApplyConfChange relies on:
// raft applies the replacement for a refused change without changing its
// configuration and without panicking (an empty ConfChangeV2 would panic:
// it means "leave the joint configuration").
func TestRefusedChangeIsIgnoredByRaft(t *testing.T) {
	st := raft.NewMemoryStorage()
	if err := st.ApplySnapshot(&raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}}}); err != nil {
		t.Fatal(err)
	}
	rn, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}})
	if err != nil {
		t.Fatal(err)
	}
	d := NewMemDirectory()
	d.Remove(2)
	refused, err := ApplyConfChange(d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 2, Incarnation: uuid.New()}))
	if err == nil {
		t.Fatal("re-adding a tombstoned ID accepted")
	}
	cs := rn.ApplyConfChange(refused)
	if got := cs.GetVoters(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("voters after a refused change: %v", got)
	}
}

func TestDirectoryImage(t *testing.T) {
	d := NewMemDirectory()
	a := Member{ID: 1, Incarnation: uuid.New(), PublicKey: testKey, Name: "a"}
	b := Member{ID: 2, Incarnation: uuid.New()}
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, a))
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, b))
	mustApply(t, d, removeChange(2))
	ghost := uuid.New()
	d.TombstoneIncarnation(ghost)
	img := d.Save()
	if !bytes.Equal(img, d.Save()) {
		t.Fatal("Save is not deterministic")
	}

	r := NewMemDirectory()
	if err := r.Restore(img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Save(), img) {
		t.Fatalf("restored directory differs:\n%s\n%s", r.Save(), img)
	}
	if got, _ := r.Member(1); got != a || !r.RemovedID(2) || !r.RemovedIncarnation(b.Incarnation) || !r.RemovedIncarnation(ghost) {
		t.Fatal("restore lost a member or a tombstone")
	}
	if r.Version() != d.Version() {
		t.Fatalf("version %d, want %d", r.Version(), d.Version())
	}

	// An older image (from before the removal) never brings a tombstoned
	// member back.
	old := NewMemDirectory()
	mustApply(t, old, addChange(t, raftpb.ConfChangeAddNode, a))
	mustApply(t, old, addChange(t, raftpb.ConfChangeAddNode, b))
	if err := r.Restore(old.Save()); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Incarnation(2); ok || !r.RemovedID(2) {
		t.Fatal("an old image resurrected a removed member")
	}
	if r.Version() != d.Version() {
		t.Fatal("restore made the version go back")
	}

	inc := a.Incarnation.String()
	for name, bad := range map[string]string{
		"empty":         ``,
		"format":        `{"format":2}`,
		"bad id":        `{"format":1,"members":[{"id":"zz","incarnation":"` + inc + `"}]}`,
		"bad removed":   `{"format":1,"removed_ids":["0"]}`,
		"nil removed":   `{"format":1,"removed_incarnations":["00000000-0000-0000-0000-000000000000"]}`,
		"duplicate":     `{"format":1,"members":[{"id":"1","incarnation":"` + inc + `"},{"id":"2","incarnation":"` + inc + `"}]}`,
		"member+tomb":   `{"format":1,"members":[{"id":"1","incarnation":"` + inc + `"}],"removed_ids":["1"]}`,
		"trailing":      `{"format":1} x`,
		"not an object": `[]`,
	} {
		before := r.Save()
		if err := r.Restore([]byte(bad)); !errors.Is(err, ErrBadImage) {
			t.Errorf("%s: error %v, want ErrBadImage", name, err)
		}
		if !bytes.Equal(before, r.Save()) {
			t.Errorf("%s: a refused image changed the directory", name)
		}
	}
}

// TestKitNeverPanics feeds mutated contexts and images: network input (a
// log entry, a snapshot from the leader) must give errors, not panics.
func TestKitNeverPanics(t *testing.T) {
	d := NewMemDirectory()
	mustApply(t, d, addChange(t, raftpb.ConfChangeAddNode, Member{ID: 1, Incarnation: uuid.New(), PublicKey: testKey}))
	mustApply(t, d, removeChange(5))
	ctx, _ := EncodeConfContext(Member{ID: 2, Incarnation: uuid.New(), PublicKey: testKey, Name: "b"})
	seeds := [][]byte{ctx, d.Save()}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		b := bytes.Clone(seeds[i%2])
		for j := r.IntN(4); j >= 0; j-- {
			b[r.IntN(len(b))] = byte(r.IntN(256))
		}
		if r.IntN(4) == 0 {
			b = b[:r.IntN(len(b))]
		}
		_, _ = DecodeConfContext(b)
		_, _ = ApplyConfChange(NewMemDirectory(), &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(2), Context: b})
		_ = NewMemDirectory().Restore(b)
	}
}
