package testnats

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Proxy is a loopback TCP proxy for fault injection: in front of a NATS
// server's client port (to stall one client, as if its process were
// paused) or on a route between two servers (to partition them).
//
// Pause stops forwarding in both directions without closing anything, so
// the peers see a silent link and everything queued flows on Resume, as
// after a process pause. Cut closes every connection and refuses new ones
// until Heal, as a network partition with resets does.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	resumed chan struct{} // nil while flowing; closed on Resume
	cut     bool
	closed  bool
	conns   map[net.Conn]struct{}

	wg sync.WaitGroup
}

// StartProxy listens on a random loopback port and forwards every
// connection to target (host:port); t.Cleanup closes it.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as a NATS client URL.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.cut || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, s) {
			continue
		}
		p.wg.Add(2)
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// track registers both ends unless the proxy was cut or closed meanwhile.
func (p *Proxy) track(a, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		a.Close()
		b.Close()
		return false
	}
	p.conns[a], p.conns[b] = struct{}{}, struct{}{}
	return true
}

// pipe copies src to dst, holding bytes while paused; it closes both ends
// when either fails.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		p.waitResumed()
		n, err := src.Read(buf)
		if n > 0 {
			p.waitResumed()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF included: the other end closes too
			return
		}
	}
}

func (p *Proxy) waitResumed() {
	p.mu.Lock()
	ch := p.resumed
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// Pause stops forwarding in both directions; connections stay open.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil && !p.closed {
		p.resumed = make(chan struct{})
	}
}

// Resume undoes Pause: held bytes flow again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// Cut closes every connection through the proxy and refuses new ones until
// Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Heal accepts connections again after Cut.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy and closes every connection; it is idempotent.
func (p *Proxy) Close() {
	p.Resume()
	p.Cut()
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.ln.Close()
	}
	p.wg.Wait()
}

// ProxiedCluster is an in-process NATS cluster whose routes all run through
// proxies, one per ordered pair of servers, so a test can partition two
// servers while both still reach the others; its servers can be killed and
// restarted on the same ports and JetStream store.
type ProxiedCluster struct {
	t       testing.TB
	opts    []*server.Options
	servers []*server.Server
	links   map[[2]int]*Proxy // [from, to]: from dials to's route port through it
}

// RunProxiedCluster starts n servers with JetStream joined by proxied
// routes and waits for a JetStream meta leader.
func RunProxiedCluster(t testing.TB, n int) *ProxiedCluster {
	t.Helper()
	c := &ProxiedCluster{t: t, links: map[[2]int]*Proxy{}}
	routePorts := make([]int, n)
	for i := range routePorts {
		routePorts[i] = FreePort(t)
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			if i != j {
				c.links[[2]int{i, j}] = StartProxy(t, fmt.Sprintf("127.0.0.1:%d", routePorts[j]))
			}
		}
	}
	for i := 0; i < n; i++ {
		o := Options(t)
		o.Port = FreePort(t) // fixed, so a restarted server is found again
		o.ServerName = fmt.Sprintf("s%d", i+1)
		// Every route is explicit and proxied. Gossiped (implicit) routes
		// would bypass the proxies, so each server advertises a route
		// address nothing listens on.
		o.Cluster = server.ClusterOpts{Name: "raftbus-lin", Host: "127.0.0.1", Port: routePorts[i], Advertise: "127.0.0.1:1"}
		var routes string
		for j := 0; j < n; j++ {
			if j != i {
				if routes != "" {
					routes += ","
				}
				routes += "nats-route://" + c.links[[2]int{i, j}].Addr()
			}
		}
		o.Routes = server.RoutesFromStr(routes)
		c.opts = append(c.opts, o)
		c.servers = append(c.servers, Run(t, o))
	}
	c.WaitMetaLeader(t, 20*time.Second)
	return c
}

// Servers returns the servers; a killed server's entry is not running.
func (c *ProxiedCluster) Servers() []*server.Server { return c.servers }

// ClientURLs lists every server's client URL, server i first.
func (c *ProxiedCluster) ClientURLs(i int) string {
	var out string
	for k := range c.opts {
		o := c.opts[(i+k)%len(c.opts)]
		if out != "" {
			out += ","
		}
		out += fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return out
}

// Kill shuts server i down.
func (c *ProxiedCluster) Kill(i int) {
	c.servers[i].Shutdown()
	c.servers[i].WaitForShutdown()
}

// Restart starts server i again on its ports and JetStream store; the
// server is shut down by the cleanup of the test that created the cluster,
// failures are reported to t.
func (c *ProxiedCluster) Restart(t testing.TB, i int) {
	t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		t.Fatalf("restart nats-server %d: %v", i, err)
	}
	go s.Start()
	c.t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("restarted nats-server %d not ready within 10s", i)
	}
	c.servers[i] = s
}

// Partition cuts the routes between servers i and j in both directions.
func (c *ProxiedCluster) Partition(i, j int) {
	c.links[[2]int{i, j}].Cut()
	c.links[[2]int{j, i}].Cut()
}

// Heal undoes Partition; the servers reconnect their routes by themselves.
func (c *ProxiedCluster) Heal(i, j int) {
	c.links[[2]int{i, j}].Heal()
	c.links[[2]int{j, i}].Heal()
}

// WaitMetaLeader waits until a running server is the JetStream meta leader.
func (c *ProxiedCluster) WaitMetaLeader(t testing.TB, within time.Duration) {
	t.Helper()
	Eventually(t, within, func() error {
		for _, s := range c.servers {
			if s.Running() && s.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader")
	})
}

// WaitRoutes waits until every running server has a route to every other
// running server.
func (c *ProxiedCluster) WaitRoutes(t testing.TB, within time.Duration) {
	t.Helper()
	Eventually(t, within, func() error {
		running := 0
		for _, s := range c.servers {
			if s.Running() {
				running++
			}
		}
		for _, s := range c.servers {
			if !s.Running() {
				continue
			}
			if got := s.NumRoutes(); got < running-1 {
				return fmt.Errorf("%s has %d routes, want at least %d", s.Name(), got, running-1)
			}
		}
		return nil
	})
}
