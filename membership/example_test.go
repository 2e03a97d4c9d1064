package membership_test

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// The member directory is rebuilt from the stream's committed records
// alone.
func ExampleRebuild() {
	n1, n2 := uuid.MustParse("01a20000-0000-7000-8000-000000000001"), uuid.MustParse("01a20000-0000-7000-8000-000000000002")
	dir := membership.Rebuild([]membership.Record{
		{V: 1, Kind: membership.KindCommitted, Committed: &membership.Committed{Index: 1, Op: membership.OpAdd, Version: 1,
			Member: membership.Member{ID: 1, Name: "n1", Incarnation: n1}}},
		{V: 1, Kind: membership.KindCommitted, Committed: &membership.Committed{Index: 5, Op: membership.OpAdd, Version: 5,
			Member: membership.Member{ID: 2, Name: "n2", Incarnation: n2}}},
		{V: 1, Kind: membership.KindCommitted, Committed: &membership.Committed{Index: 9, Op: membership.OpRemove, Version: 9,
			Member: membership.Member{ID: 2, Incarnation: n2}}},
	})
	for _, m := range dir.Sorted() {
		fmt.Println(m.ID, m.Name)
	}
	fmt.Println("removed:", dir.RemovedIDs[2], dir.RemovedIncarnations[n2])
	// Output:
	// 0000000000000001 n1
	// removed: true true
}
