package cli

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// Issue 10: a removal showed as "remove 0000000000000002 (, incarnation
// 00000000-...)" and the removed incarnation's later announcement as
// "member 0000000000000002". Rows now name the member as it was, and the
// announcement as tombstoned.
func TestHistoryTellsTheStory(t *testing.T) {
	inc2 := uuid.New()
	n2 := membership.Member{ID: 2, Name: "n2", Incarnation: inc2}
	recs := []membership.Record{
		{Kind: membership.KindCommitted, Committed: &membership.Committed{Index: 5, Op: membership.OpAdd, Member: n2}},
		{Kind: membership.KindRequest, Request: &membership.Request{ID: "r1", Op: membership.OpRemove, RaftID: 2}},
		{Kind: membership.KindCommitted, Committed: &membership.Committed{Index: 6, Op: membership.OpRemove, Member: membership.Member{ID: 2}}},
		{Kind: membership.KindOutcome, Outcome: &membership.Outcome{RequestID: "r1", Status: membership.StatusApplied, Index: 6, RaftID: 2, Leader: 1}},
		{Kind: membership.KindOutcome, Outcome: &membership.Outcome{RequestID: "r9", Status: membership.StatusRejected, Code: membership.CodeNotReady, Reason: "lagging"}},
		{Kind: membership.KindAnnounce, Announce: &membership.Announce{Name: "n2", Incarnation: inc2, RaftID: 2}},
	}
	h := newHistoryStory()
	var rows []string
	for _, r := range recs {
		d, _ := h.describe(r)
		rows = append(rows, d)
	}
	want := []string{
		"committed at index 5: add 0000000000000002 n2 (incarnation " + inc2.String() + ")",
		"request r1: remove 0000000000000002 n2 (incarnation " + inc2.String() + ")",
		"committed at index 6: remove 0000000000000002 n2 (incarnation " + inc2.String() + ")",
		"request r1 applied at index 6: remove 0000000000000002 n2",
		"request r9 (?) rejected (not_ready): lagging",
		"TOMBSTONED: removed as member 0000000000000002",
	}
	for i, w := range want {
		if !strings.Contains(rows[i], w) {
			t.Errorf("row %d = %q, want it to contain %q", i, rows[i], w)
		}
	}
}
