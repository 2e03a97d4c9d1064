package raftstore_test

import (
	"fmt"
	"log"
	"os"

	raftpb "go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/raftstore"
)

func Example() {
	dir, err := os.MkdirTemp("", "raftstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := raftstore.Open(dir, raftstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// What the Ready loop does before sending a Ready's messages.
	hs := &raftpb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(uint64(2))}
	ents := []*raftpb.Entry{
		{Index: new(uint64(1)), Term: new(uint64(1))},
		{Index: new(uint64(2)), Term: new(uint64(1)), Data: []byte("x=1")},
	}
	if err := store.Save(hs, ents); err != nil {
		log.Fatal(err)
	}
	// After the state machine applied entry 2: snapshot it, then compact.
	cs := &raftpb.ConfState{Voters: []uint64{1}}
	if _, err := store.CreateSnapshot(2, cs, []byte("state at 2")); err != nil {
		log.Fatal(err)
	}
	if err := store.Compact(2); err != nil {
		log.Fatal(err)
	}
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	// A restart finds everything again.
	store, err = raftstore.Open(dir, raftstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	st, conf, _ := store.InitialState()
	first, _ := store.FirstIndex()
	last, _ := store.LastIndex()
	snap, _ := store.Snapshot()
	fmt.Printf("term=%d commit=%d voters=%v log=[%d,%d] snapshot=%d %q\n",
		st.GetTerm(), st.GetCommit(), conf.GetVoters(), first, last,
		snap.GetMetadata().GetIndex(), snap.GetData())
	// Output:
	// term=1 commit=2 voters=[1] log=[3,2] snapshot=2 "state at 2"
}

func ExampleOpenHost() {
	dir, err := os.MkdirTemp("", "raftstore-host-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// One Pebble database, and one WAL, for all the Raft groups of a process.
	host, err := raftstore.OpenHost(dir, raftstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range []uint64{1, 2, 3} {
		store, err := host.Group(g) // a raft.Storage of its own for each group
		if err != nil {
			log.Fatal(err)
		}
		hs := &raftpb.HardState{Term: new(uint64(1)), Vote: new(g), Commit: new(uint64(0))}
		if err := store.Save(hs, []*raftpb.Entry{{Index: new(uint64(1)), Term: new(uint64(1))}}); err != nil {
			log.Fatal(err)
		}
	}
	// Group 0 is created with the database.
	groups, _ := host.Groups()
	fmt.Println("groups:", groups)
	// Closing the Host closes every group's store too.
	if err := host.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// groups: [0 1 2 3]
}
