package cli

import (
	"testing"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// A node's status names group 0's Raft ID and leader; another group's
// come from its Groups entry, and a node that reports no such group says
// nothing about it (its host may still be alive).
func TestGroupStatuses(t *testing.T) {
	inc := uuid.New()
	live := []membership.NodeStatus{
		{RaftID: 1, Leader: 1, Incarnation: inc, Applied: 9, Groups: map[uint64]membership.GroupStatus{1: {RaftID: 3, Leader: 4, Applied: 5}}},
		{RaftID: 2, Leader: 1},
	}
	if got := groupStatuses(live, 0); len(got) != 2 || got[0].RaftID != 1 || got[0].Leader != 1 {
		t.Fatalf("group 0: %+v", got)
	}
	got := groupStatuses(live, 1)
	if len(got) != 1 || got[0].RaftID != 3 || got[0].Leader != 4 || got[0].Applied != 5 || got[0].Incarnation != inc {
		t.Fatalf("group 1: %+v", got)
	}
	if got := groupStatuses(live, 2); len(got) != 0 {
		t.Fatalf("group 2: %+v", got)
	}
}
