package testnats

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Partitioning two servers of a proxied cluster stops traffic between
// their clients (gossiped routes do not bypass the proxies), healing
// restores it, and a killed server restarts on its ports.
func TestProxiedClusterPartitionAndRestart(t *testing.T) {
	c := RunProxiedCluster(t, 3)
	c.WaitRoutes(t, 20*time.Second)
	pub := Connect(t, c.Servers()[0])
	sub := Connect(t, c.Servers()[1])
	msgs := make(chan *nats.Msg, 64)
	if _, err := sub.ChanSubscribe("x", msgs); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	delivered := func(within time.Duration) bool {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			_ = pub.Publish("x", []byte("hi"))
			select {
			case <-msgs:
				return true
			case <-time.After(50 * time.Millisecond):
			}
		}
		return false
	}
	if !delivered(10 * time.Second) {
		t.Fatal("no delivery between servers 0 and 1 before the partition")
	}
	c.Partition(0, 1)
	// Let routes notice the cut; anything published before is drained.
	Eventually(t, 10*time.Second, func() error {
		if routesTo(c, 0, 1) || routesTo(c, 1, 0) {
			return fmt.Errorf("servers 0 and 1 still have a route")
		}
		return nil
	})
	for len(msgs) > 0 {
		<-msgs
	}
	if delivered(time.Second) {
		t.Fatal("a message crossed the partition between servers 0 and 1")
	}
	c.Heal(0, 1)
	if !delivered(20 * time.Second) {
		t.Fatal("no delivery after healing the partition")
	}

	c.Kill(2)
	c.Restart(t, 2)
	c.WaitRoutes(t, 20*time.Second)
	c.WaitMetaLeader(t, 20*time.Second)
}

// routesTo reports whether server i has a route to server j.
func routesTo(c *ProxiedCluster, i, j int) bool {
	rz, err := c.Servers()[i].Routez(nil)
	if err != nil {
		return true
	}
	for _, r := range rz.Routes {
		if r.RemoteName == c.Servers()[j].Name() {
			return true
		}
	}
	return false
}
