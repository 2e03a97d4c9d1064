package node_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/node"
)

// A single-node cluster over the in-memory bus, replicating the key-value
// state machine.
func ExampleNew() {
	cluster, inc := uuid.New(), uuid.Must(uuid.NewV7())
	network := membus.NewNetwork(1)
	defer network.Close()
	b, _ := network.NewBus(membus.Config{Cluster: cluster, Self: inc})
	defer b.Close()
	store := kv.NewStore()
	n, err := node.New(node.Config{
		Cluster: cluster, ID: 1, Incarnation: inc,
		Peers:   []node.Member{{ID: 1, Name: "n1", Incarnation: inc}},
		Storage: node.NewMemoryStorage(), StateMachine: store, Bus: b,
		TickInterval: 10 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n.Stop()
	for n.Leader() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := n.Propose(ctx, kv.EncodePut("greeting", []byte("hello"))); err != nil {
		fmt.Println(err)
		return
	}
	v, _ := store.Get("greeting")
	fmt.Println(string(v.Data))
	// Output: hello
}
