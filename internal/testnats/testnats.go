// Package testnats starts embedded nats-servers for tests: a single server
// with JetStream, or an in-process cluster of servers joined by routes. Every
// server listens on a random loopback port, stores into a test temporary
// directory and is shut down by t.Cleanup.
package testnats

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options returns the options of a single test server with JetStream.
func Options(t testing.TB) *server.Options {
	return &server.Options{
		Host:               "127.0.0.1",
		Port:               -1,
		NoLog:              true,
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           t.TempDir(),
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  256 << 20,
	}
}

// Run starts a server with opts (Options(t) when nil) and waits until it
// accepts connections.
func Run(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts == nil {
		opts = Options(t)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed by t.Cleanup.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// FreePort reserves a loopback port by listening and closing; the small
// race with other processes is acceptable in tests, and routes need their
// ports known before any server starts.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserve port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RunCluster starts n servers joined by routes into one NATS cluster with
// JetStream, and waits until JetStream has a meta leader.
func RunCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	return RunClusterWith(t, n, nil)
}

// RunClusterWith is RunCluster with a hook that adjusts each server's
// options (users and permissions, say) before it starts.
func RunClusterWith(t testing.TB, n int, adjust func(*server.Options)) []*server.Server {
	t.Helper()
	ports := make([]int, n)
	routes := ""
	for i := range ports {
		ports[i] = FreePort(t)
		if i > 0 {
			routes += ","
		}
		routes += fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	servers := make([]*server.Server, n)
	for i := range servers {
		o := Options(t)
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Cluster = server.ClusterOpts{Name: "raftbus-test", Host: "127.0.0.1", Port: ports[i]}
		o.Routes = server.RoutesFromStr(routes)
		if adjust != nil {
			adjust(o)
		}
		servers[i] = Run(t, o)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return servers
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("NATS cluster formed no JetStream meta leader within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eventually polls cond every 10ms until it returns nil or the deadline
// passes, then fails the test with the last error.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RunClusterOrSingle starts one server when n is 1, else a cluster of n.
func RunClusterOrSingle(t testing.TB, n int) []*server.Server {
	if n == 1 {
		return []*server.Server{Run(t, nil)}
	}
	return RunCluster(t, n)
}
