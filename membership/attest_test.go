package membership

import (
	"slices"
	"testing"

	"github.com/google/uuid"
)

// A node attests the changes it applied as a voter, after the bootstrap
// run: not before its addition, not while a learner, not after its
// removal, and never rejected requests or stream repairs.
func TestChangesToAttest(t *testing.T) {
	inc := uuid.New()
	h := func(i uint64, op string, id HexID, req, rejected string) Settled {
		m := Member{ID: id}
		if id == 4 {
			m.Incarnation = inc
		}
		return Settled{Index: i, Op: op, Member: m, RequestID: req, Rejected: rejected}
	}
	st := State{History: []Settled{
		h(1, OpAdd, 1, "", ""), h(2, OpAdd, 2, "", ""), // bootstrap
		h(3, OpAddLearner, 4, "r3", ""), // this node, as a learner
		h(4, OpAdd, 5, "r4", ""),
		h(5, OpPromote, 4, "r5", ""),
		h(6, OpRemove, 2, "r6", ""),
		h(7, OpRemove, 9, "r7", "no such member"),
		h(8, OpRepairStream, 0, "r8", ""),
		h(9, OpAdd, 6, "r9", ""),
		h(10, OpRemove, 4, "r10", ""),
		h(11, OpAdd, 7, "r11", ""),
	}}
	var got []uint64
	for _, c := range changesToAttest(st, 4, inc) {
		got = append(got, c.Index)
	}
	if want := []uint64{6, 9, 10}; !slices.Equal(got, want) {
		t.Fatalf("attests %v, want %v", got, want)
	}
	// A bootstrap voter attests everything after the bootstrap run.
	got = nil
	for _, c := range changesToAttest(st, 1, uuid.Nil) {
		got = append(got, c.Index)
	}
	if want := []uint64{3, 4, 5, 6, 9, 10, 11}; !slices.Equal(got, want) {
		t.Fatalf("bootstrap voter attests %v, want %v", got, want)
	}
}
