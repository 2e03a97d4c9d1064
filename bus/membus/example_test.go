package membus_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
)

// A partition between two incarnations loses their frames; the loss shows
// in the sender's stats. Heal restores traffic.
func ExampleNetwork_Partition() {
	n := membus.NewNetwork(42)
	defer n.Close()
	cluster, a, b := uuid.New(), uuid.New(), uuid.New()
	busA, _ := n.NewBus(membus.Config{Cluster: cluster, Self: a})
	busB, _ := n.NewBus(membus.Config{Cluster: cluster, Self: b})
	got := make(chan string, 1)
	_ = busB.Start(receiver(got))

	n.Partition(a, b)
	_ = busA.Send(b, bus.KindMsg, []byte("lost"))
	for busA.Stats().Dropped[bus.DropPartitioned] == 0 {
		time.Sleep(time.Millisecond) // tests use bustest.WaitFor, with a deadline
	}
	n.Heal()
	_ = busA.Send(b, bus.KindMsg, []byte("delivered"))
	fmt.Println(<-got)

	n.Stall(b)
	var err error
	for err == nil {
		err = busA.Send(b, bus.KindMsg, []byte("x"))
	}
	fmt.Println(errors.Is(err, bus.ErrQueueFull))
	// Output:
	// delivered
	// true
}

type receiver chan string

func (r receiver) Deliver(d bus.Delivery)                 { r <- string(d.Data) }
func (r receiver) Dropped(uuid.UUID, bus.DropReason, int) {}
