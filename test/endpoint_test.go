package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftbus/raftbus/internal/cli"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// 'endpoint status' and 'endpoint health' against a running cluster: all
// healthy; one follower down is a WARNING that names it (and 'member list'
// shows it unreachable, from evidence); two down is CRITICAL, quorum lost.
func TestEndpointStatusAndHealth(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	lead := c.waitLeader()
	c.waitBound()
	args := func(sub string, more ...string) []string {
		return append([]string{"endpoint", sub, "-s", c.nats[0].ClientURL(), "--cluster", c.cluster.String(), "--wait", "1s"}, more...)
	}
	out, errOut, code := runCLI(t, args("health")...)
	if code != cli.HealthOK || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("healthy cluster: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, args("status", "-w", "json")...)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var v struct {
		Leader string `json:"leader"`
		Nodes  []struct {
			ID        string  `json:"raft_id"`
			Name      string  `json:"name"`
			Reachable bool    `json:"reachable"`
			Commit    uint64  `json:"commit_index"`
			Applied   uint64  `json:"applied_index"`
			Lag       *uint64 `json:"lag"`
			Role      string  `json:"role"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(v.Nodes) != 3 || v.Leader != raftbridge.ID(lead.Identity().RaftID).String() {
		t.Fatalf("status: %s", out)
	}
	for _, n := range v.Nodes {
		if !n.Reachable || n.Commit == 0 || n.Applied == 0 || n.Lag == nil || n.Role != "voter" {
			t.Fatalf("node row %+v in %s", n, out)
		}
	}

	// Every member is alive, from its status answer.
	testnats.Eventually(t, 10*time.Second, func() error {
		out, errOut, code := runCLI(t, c.memberArgs("list")...)
		if code != 0 || strings.Count(out, " alive ") != 3 {
			return fmt.Errorf("member list: exit %d\n%s%s", code, out, errOut)
		}
		return nil
	})

	// One follower down: quorum holds, at risk.
	var down int
	for i, s := range c.servers {
		if s != lead {
			down = i
			break
		}
	}
	c.servers[down].Stop()
	c.servers[down] = nil
	downID := raftbridge.ID(c.idents[down].RaftID).String()
	out, _, code = runCLI(t, args("health")...)
	if code != cli.HealthWarning || !strings.Contains(out, "quorum at risk") || !strings.Contains(out, "voter "+downID+" did not answer") {
		t.Fatalf("one follower down: exit %d\n%s", code, out)
	}
	out, errOut, code = runCLI(t, c.memberArgs("list")...)
	if code != 0 {
		t.Fatalf("member list: exit %d: %s", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, downID) && (strings.Contains(line, "alive") || !strings.Contains(line, "no answer")):
			t.Fatalf("member list shows the stopped node as:\n%s", line)
		case strings.HasPrefix(line, raftbridge.ID(lead.Identity().RaftID).String()) && !strings.Contains(line, "alive"):
			t.Fatalf("member list shows the leader as:\n%s", line)
		}
	}

	// Two down: quorum lost.
	for i, s := range c.servers {
		if s != nil && s != lead {
			s.Stop()
			c.servers[i] = nil
		}
	}
	out, _, code = runCLI(t, args("health")...)
	if code != cli.HealthCritical || !strings.Contains(out, "quorum lost: 1 of 3 voters answered") {
		t.Fatalf("two of three down: exit %d\n%s", code, out)
	}
}

// --watch refreshes until interrupted, then exits 0.
func TestEndpointStatusWatch(t *testing.T) {
	c := newSrvCluster(t, 1, node.Config{})
	c.waitLeader()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"endpoint", "status", "--watch", "--interval", "50ms", "--wait", "500ms",
			"-s", c.nats[0].ClientURL(), "--cluster", c.cluster.String()}, &out, &errOut)
	}()
	testnats.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(out.String(), "\x1b[H\x1b[2J"); n < 2 {
			return fmt.Errorf("%d frames so far; stderr %s", n, errOut.String())
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("--watch exited %d: %s", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--watch did not stop when interrupted")
	}
	if !strings.Contains(out.String(), "StateLeader") && !strings.Contains(out.String(), "Leader") {
		t.Fatalf("frames:\n%s", out.String())
	}
}
