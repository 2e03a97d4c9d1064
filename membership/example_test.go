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
	// As read from the stream: Source and Signer are the writer's
	// incarnation (its subject's last token) and verified signing key.
	// The bootstrap (index 1) is written by n1, which it adds; the later
	// changes by n1, a voter by then.
	const k1, k2 = "UN1KEY", "UN2KEY"
	byN1 := func(c membership.Committed) membership.Record {
		return membership.Record{V: 1, Kind: membership.KindCommitted, Source: n1, Signer: k1, Committed: &c}
	}
	dir := membership.Rebuild([]membership.Record{
		byN1(membership.Committed{Index: 1, Op: membership.OpAdd, Version: 1,
			Member: membership.Member{ID: 1, Name: "n1", Incarnation: n1, PublicKey: k1}}),
		byN1(membership.Committed{Index: 5, Op: membership.OpAdd, Version: 5,
			Member: membership.Member{ID: 2, Name: "n2", Incarnation: n2, PublicKey: k2}}),
		// A record of a removal signed by a stranger is skipped.
		{V: 1, Kind: membership.KindCommitted, Seq: 8, Source: uuid.New(), Signer: "USTRANGER",
			Committed: &membership.Committed{Index: 8, Op: membership.OpRemove, Member: membership.Member{ID: 1, Incarnation: n1}}},
		byN1(membership.Committed{Index: 9, Op: membership.OpRemove, Version: 9,
			Member: membership.Member{ID: 2, Incarnation: n2}}),
	})
	for _, m := range dir.Sorted() {
		fmt.Println(m.ID, m.Name)
	}
	fmt.Println("removed:", dir.RemovedIDs[2], dir.RemovedIncarnations[n2])
	fmt.Println("rejected:", dir.Rejected[0].Seq, dir.Rejected[0].Reason)
	// Output:
	// 0000000000000001 n1
	// removed: true true
	// rejected: 8 not_authorized
}
