package raftbridge_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/raftbus/raftbus/raftbridge"
)

// A FileSnapshotStore in Config.SnapshotStore streams snapshots to and from
// files. The application saves its state machine into the store and puts
// the reference in the raftpb.Snapshot it hands raft; a received MsgSnap
// carries the receiving store's reference, which the application opens to
// restore.
func ExampleFileSnapshotStore() {
	dir, err := os.MkdirTemp("", "snapshots-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := raftbridge.NewFileSnapshotStore(raftbridge.FileSnapshotStoreConfig{Dir: dir})
	if err != nil {
		panic(err)
	}
	defer store.Close()

	// Taking a snapshot: Data of the raftpb.Snapshot is ref, 40 bytes.
	ref, err := store.Save(4, 1000, strings.NewReader("the state machine"))
	if err != nil {
		panic(err)
	}
	// cfg := raftbridge.Config{..., SnapshotStore: store}

	// Restoring one (ref from a received MsgSnap's Snapshot.Data).
	src, err := store.Open(ref)
	if err != nil {
		panic(err)
	}
	defer src.Close()
	state, err := io.ReadAll(io.NewSectionReader(src, 0, src.Size()))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d-byte reference, %q\n", len(ref), state)
	// Output: 40-byte reference, "the state machine"
}
