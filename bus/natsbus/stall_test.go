package natsbus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/bustest"
)

// routedPair starts two servers joined by a route and waits for the route.
func routedPair(t *testing.T) (s1, s2 *server.Server) {
	t.Helper()
	// Without JetStream: a clustered JetStream would wait for a quorum.
	o1 := serverOptions(t)
	o1.JetStream = false
	o1.ServerName = "s1"
	o1.Cluster = server.ClusterOpts{Name: "stall", Host: "127.0.0.1", Port: -1}
	s1 = runServer(t, o1)
	o2 := serverOptions(t)
	o2.JetStream = false
	o2.ServerName = "s2"
	o2.Cluster = server.ClusterOpts{Name: "stall", Host: "127.0.0.1", Port: -1}
	o2.Routes = server.RoutesFromStr("nats://" + s1.ClusterAddr().String())
	s2 = runServer(t, o2)
	bustest.WaitFor(t, 10*time.Second, "route between the servers", func() bool {
		return s1.NumRoutes() > 0 && s2.NumRoutes() > 0
	})
	return s1, s2
}

// TestStalledServerFailover stalls the server a bus is connected to (its
// proxy stops forwarding what the client writes, as a SIGSTOPped server
// would stop reading) and checks that, with ConnTuning's options, the
// connection moves to the other server of the cluster and the bus delivers
// again while the first server is still stalled. "loaded" keeps sending
// during the stall, so that nats.go's socket writes block and the write
// deadline, not only the pings, is exercised.
func TestStalledServerFailover(t *testing.T) {
	for _, loaded := range []bool{false, true} {
		name := "idle"
		if loaded {
			name = "loaded"
		}
		t.Run(name, func(t *testing.T) {
			s1, s2 := routedPair(t)
			p := startProxy(t, s1.Addr().String())
			cluster, a, b := uuid.New(), uuid.New(), uuid.New()

			// The tuning is scaled down so the test is quick; the behaviour,
			// not the timing, is what it checks.
			tuning := ConnTuning{WriteDeadline: 200 * time.Millisecond, PingInterval: 50 * time.Millisecond, MaxPingsOut: 2}
			opts := append(tuning.Options(), nats.DontRandomize(), nats.IgnoreDiscoveredServers(),
				nats.Timeout(500*time.Millisecond))
			ncA := connect(t, strings.Join([]string{p.url(), s2.ClientURL()}, ","), opts...)
			if got := ncA.ConnectedUrl(); got != p.url() {
				t.Fatalf("connected to %s, want the proxy %s first", got, p.url())
			}
			busA := newBus(t, Config{Conn: ncA, Cluster: cluster, Self: a})
			recv := bustest.NewCollector()
			startedBus(t, Config{Conn: connect(t, s2.ClientURL()), Cluster: cluster, Self: b}, recv)

			// Through s1 and the route first.
			sendUntil(t, busA, b, recv, 1)

			p.pause()
			t.Cleanup(p.resume)
			stallSends := 0
			if loaded {
				payload := make([]byte, 64<<10)
				for range 256 { // 16 MiB, more than the socket buffers hold
					if err := busA.Send(b, bus.KindMsg, payload); err == nil {
						stallSends++
					}
				}
			}
			bustest.WaitFor(t, 20*time.Second, "failover to the second server", func() bool {
				// The bus sees the reconnect from nats.go's status events,
				// asynchronously.
				return ncA.ConnectedUrl() == s2.ClientURL() && busA.State() == bus.StateConnected &&
					busA.Stats().Reconnects >= 1
			})
			// Delivered while s1 is still stalled.
			sendUntil(t, busA, b, recv, recv.Count()+1)
			t.Logf("failed over with %d payloads sent during the stall; %d delivered", stallSends, recv.Count())
		})
	}
}

// sendUntil sends small payloads from x to "to" until recv holds at least
// want deliveries, polling a while after each: a send right after a
// reconnect may be refused or lost.
func sendUntil(t *testing.T, x *Bus, to uuid.UUID, recv *bustest.Collector, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := x.Send(to, bus.KindMsg, []byte("hello")); err != nil &&
			!errors.Is(err, bus.ErrNotConnected) && !errors.Is(err, bus.ErrQueueFull) {
			t.Fatal(err)
		}
		for poll := time.Now().Add(100 * time.Millisecond); time.Now().Before(poll); {
			if recv.Count() >= want {
				return
			}
			time.Sleep(time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries, want %d; sender %+v", recv.Count(), want, x.Stats())
		}
	}
}

func TestConnTuningOptions(t *testing.T) {
	s := runServer(t, serverOptions(t))
	nc := connect(t, s.ClientURL(), ConnTuning{}.Options()...)
	if nc.Opts.FlusherTimeout != DefaultWriteDeadline || nc.Opts.PingInterval != DefaultPingInterval ||
		nc.Opts.MaxPingsOut != DefaultMaxPingsOut || !nc.Opts.ReconnectOnFlusherError {
		t.Fatalf("defaults not applied: %+v", nc.Opts)
	}
	nc2 := connect(t, s.ClientURL(), ConnTuning{WriteDeadline: 3 * time.Second, PingInterval: 4 * time.Second,
		MaxPingsOut: 5, KeepOnWriteError: true}.Options()...)
	if nc2.Opts.FlusherTimeout != 3*time.Second || nc2.Opts.PingInterval != 4*time.Second ||
		nc2.Opts.MaxPingsOut != 5 || nc2.Opts.ReconnectOnFlusherError {
		t.Fatalf("tuning not applied: %+v", nc2.Opts)
	}
}
