package node

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/raftbridge"
)

// The reference node and a user's own raft loop apply membership with one
// code path: the directory the node's bridge consults is the kit's
// MemDirectory, fed by raftbridge.ApplyConfChangeMember. Fed the same
// committed log, the node's directory and a kit directory fed by
// raftbridge.ApplyConfChange from the entries' raw contexts (the format a
// kit user decodes) save the same image after every change, including
// re-adds of tombstoned IDs and incarnations, learners and promotions.
func TestNodeAppliesMembershipThroughTheKit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ms := newMembership()
	kit := raftbridge.NewMemDirectory()
	var known []Member // every member ever proposed, for re-adds
	next := uint64(1)
	accepted := 0
	for index := uint64(1); index <= 400; index++ {
		var typ raftpb.ConfChangeType
		var id uint64
		var ctx *confContext
		switch r := rng.IntN(10); {
		case r < 4 || len(known) == 0: // a new member, voter or learner
			m := Member{ID: raftbridge.ID(next), Name: "m", Incarnation: uuid.New()}
			next++
			typ = raftpb.ConfChangeAddNode
			if r%2 == 1 {
				typ = raftpb.ConfChangeAddLearnerNode
			}
			known = append(known, m)
			id, ctx = uint64(m.ID), &confContext{Member: &m}
		case r < 6: // a re-add of someone seen before (maybe tombstoned)
			m := known[rng.IntN(len(known))]
			if rng.IntN(2) == 0 {
				m.Incarnation = uuid.New() // same ID, new incarnation
			}
			typ, id, ctx = raftpb.ConfChangeAddNode, uint64(m.ID), &confContext{Member: &m}
		case r < 7: // a promotion
			typ, id = raftpb.ConfChangeAddNode, uint64(known[rng.IntN(len(known))].ID)
		default:
			typ, id = raftpb.ConfChangeRemoveNode, uint64(known[rng.IntN(len(known))].ID)
		}
		cc := changeWithContext(t, typ, id, ctx)
		verdict := ms.decide(index, cc, ctx)
		if verdict != nil {
			continue // raft is handed a no-op on every node alike
		}
		accepted++
		if _, err := raftbridge.ApplyConfChange(kit, cc); err != nil {
			t.Fatalf("index %d: the node applied %v, the kit refused it: %v", index, cc, err)
		}
		if got, want := ms.dir.Save(), kit.Save(); !bytes.Equal(got, want) {
			t.Fatalf("index %d: directories differ:\n node %s\n kit  %s", index, got, want)
		}
	}
	if accepted < 100 {
		t.Fatalf("only %d of 400 changes took effect: the sequence tests little", accepted)
	}
	// The directory survives the node's snapshot image.
	restored := newMembership()
	if err := restored.restore(ms.image()); err != nil {
		t.Fatal(err)
	}
	if got, want := restored.dir.Save(), kit.Save(); !bytes.Equal(got, want) {
		t.Fatalf("restored directory differs:\n node %s\n kit  %s", got, want)
	}
}

// A change the kit refuses (a malformed key in the context) is rejected by
// the node as invalid, with nothing applied: the kit's rules are the
// node's.
func TestKitRefusalIsARejection(t *testing.T) {
	ms := newMembership()
	m := Member{ID: 1, Incarnation: uuid.New(), PublicKey: "not-a-key"}
	err := ms.decide(1, change(raftpb.ConfChangeAddNode, 1), &confContext{Member: &m})
	if RejectionCode(err) != "invalid" {
		t.Fatalf("add with a malformed key: %v", err)
	}
	if _, ok := ms.Incarnation(1); ok || len(ms.list()) != 0 {
		t.Fatal("the refused member was applied")
	}
}
