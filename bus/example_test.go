package bus_test

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
)

// printer is a bus.Receiver that hands deliveries to a channel.
type printer chan bus.Delivery

func (p printer) Deliver(d bus.Delivery)                 { p <- d }
func (p printer) Dropped(uuid.UUID, bus.DropReason, int) {}

// Two incarnations of one cluster exchange a payload. The in-memory bus is
// used here; natsbus.New gives the same Bus over NATS.
func Example() {
	net := membus.NewNetwork(1)
	defer net.Close()

	cluster := uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-4a5b6c7d8e9f")
	alice := uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-000000000001")
	bob := uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-000000000002")

	var a, b bus.Bus
	a, _ = net.NewBus(membus.Config{Cluster: cluster, Self: alice})
	b, _ = net.NewBus(membus.Config{Cluster: cluster, Self: bob})
	defer a.Close()
	defer b.Close()

	inbox := make(printer, 1)
	if err := b.Start(inbox); err != nil {
		fmt.Println(err)
		return
	}
	if err := a.Send(bob, bus.KindMsg, []byte("append entries")); err != nil {
		fmt.Println(err)
		return
	}
	d := <-inbox
	fmt.Printf("%s from %s: %s\n", d.Kind, d.From, d.Data)
	// Output:
	// msg from 0190f3c4-5a1b-7c2d-8e3f-000000000001: append entries
}
