package datadir_test

import (
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/datadir"
)

func Example() {
	dir, err := os.MkdirTemp("", "datadir-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	unlock, err := datadir.Lock(dir)
	if err != nil {
		log.Fatal(err) // another process uses this directory
	}
	defer unlock()

	cluster := uuid.MustParse("0193f3c4-7a51-7c2e-9a1d-2f6c1e0b9d42")
	id, err := datadir.Load(dir)
	created := errors.Is(err, datadir.ErrNoIdentity)
	if created { // a new directory: a new incarnation, never reused
		id, err = datadir.Create(dir, datadir.Identity{ClusterID: cluster, RaftID: 2, Name: "n2"})
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", created, "raft ID:", id.RaftID, "incarnation v7:", id.Incarnation.Version() == 7)

	// The same directory started with the wrong cluster is refused.
	other := uuid.MustParse("0193f3c4-0000-7000-8000-000000000000")
	err = id.Check(datadir.Expect{ClusterID: other, Source: "--cluster"})
	fmt.Println(errors.Is(err, datadir.ErrMismatch))
	// Output:
	// created: true raft ID: 2 incarnation v7: true
	// true
}
