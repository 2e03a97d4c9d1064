package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/cli"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

// Issue 8, item 4: a first `raftbus node --bootstrap` that fails must not
// ruin the data directory. Each failure below happens after the identity
// was written; the retry bootstraps the same cluster and serves writes.
func TestBootstrapRetryAfterFailedFirstStart(t *testing.T) {
	t.Run("http port taken", func(t *testing.T) {
		ns := testnats.Run(t, nil)
		dir := filepath.Join(t.TempDir(), "n1")
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		_, errOut, code := runBinary(t, bootstrapArgs(dir, ns.ClientURL(), taken.Addr().String())...)
		if code == 0 || !strings.Contains(errOut, "listen for HTTP") {
			t.Fatalf("first start on a taken port: exit %d, stderr:\n%s", code, errOut)
		}
		first := mustIdentity(t, dir)
		n := retryBootstrap(t, dir, ns.ClientURL())
		if got := mustIdentity(t, dir); got.ClusterID != first.ClusterID || got.RaftID != first.RaftID || got.Incarnation != first.Incarnation {
			t.Fatalf("the retry changed the identity: %v, then %v", first, got)
		}
		n.interrupt(t)
	})
	t.Run("nats unreachable", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "n1")
		url := fmt.Sprintf("nats://127.0.0.1:%d", testnats.FreePort(t))
		args := append(bootstrapArgs(dir, url, fmt.Sprintf("127.0.0.1:%d", testnats.FreePort(t))), "--timeout", "1s")
		_, errOut, code := runBinary(t, args...)
		if code != cli.ExitUnreachable {
			t.Fatalf("first start without NATS: exit %d (want %d), stderr:\n%s", code, cli.ExitUnreachable, errOut)
		}
		if _, err := datadir.Load(dir); err != nil {
			t.Fatalf("the failed start wrote no identity (%v): this test no longer covers the retry", err)
		}
		ns := testnats.Run(t, nil)
		retryBootstrap(t, dir, ns.ClientURL()).interrupt(t)
	})
}

// Issue 8, item 2: a member that started once and lost its raft/ directory
// is refused with --join (the command `member add` prints) and without it,
// with a message that says what happened and what to do.
func TestLostRaftLogRefusedWithJoin(t *testing.T) {
	ns := testnats.Run(t, nil)
	dir := filepath.Join(t.TempDir(), "n1")
	n := startProc(t, "n1", bootstrapArgs(dir, ns.ClientURL(), fmt.Sprintf("127.0.0.1:%d", testnats.FreePort(t)))...)
	n.waitOutput(t, 30*time.Second, "serving")
	url := servedURL(t, n)
	testnats.Eventually(t, 20*time.Second, func() error {
		_, _, err := put(url, "k", []byte("v"))
		return err
	})
	waitStarted(t, dir)
	n.interrupt(t)
	id := mustIdentity(t, dir)

	if err := os.RemoveAll(datadir.RaftDir(dir)); err != nil {
		t.Fatal(err)
	}
	base := []string{"node", "--data", dir, "--name", "n1", "--listen", fmt.Sprintf("127.0.0.1:%d", testnats.FreePort(t)),
		"-s", ns.ClientURL(), "--tick", "50ms", "--timeout", "5s"}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"with --join", append(append([]string(nil), base...), "--join", "--cluster", id.ClusterID.String())},
		{"without flags", base},
		{"with --bootstrap", append(append([]string(nil), base...), "--bootstrap")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, "n1-"+tc.name, tc.args...)
			code := p.waitExit(t, 30*time.Second)
			errOut := p.err.text()
			if code != cli.ExitPrecondition {
				t.Fatalf("exit %d (want %d); stderr:\n%s", code, cli.ExitPrecondition, errOut)
			}
			for _, want := range []string{"Raft log lost", "first started successfully", "member remove n1", "wipe " + dir} {
				if !strings.Contains(errOut, want) {
					t.Fatalf("the refusal does not say %q:\n%s", want, errOut)
				}
			}
			if strings.Contains(errOut, "holds identity data directory") {
				t.Fatalf("garbled message:\n%s", errOut)
			}
		})
	}
}

func bootstrapArgs(dir, natsURL, listen string) []string {
	return []string{"node", "--bootstrap", "--name", "n1", "--data", dir, "-s", natsURL, "--listen", listen,
		"--tick", "50ms", "--log-level", "info"}
}

// retryBootstrap repeats the operator's --bootstrap command on a free port
// and requires a node that serves writes and linearizable reads and records
// its first start.
func retryBootstrap(t *testing.T, dir, natsURL string) *proc {
	t.Helper()
	n := startProc(t, "n1-retry", bootstrapArgs(dir, natsURL, fmt.Sprintf("127.0.0.1:%d", testnats.FreePort(t)))...)
	n.waitOutput(t, 30*time.Second, "serving")
	url := servedURL(t, n)
	testnats.Eventually(t, 20*time.Second, func() error {
		_, _, err := put(url, "after-retry", []byte("ok"))
		return err
	})
	if v, err := getValue(url, "after-retry"); err != nil || v != "ok" {
		t.Fatalf("read after the retry: %q, %v", v, err)
	}
	waitStarted(t, dir)
	return n
}

func servedURL(t *testing.T, p *proc) string {
	t.Helper()
	out := p.out.text()
	i := strings.Index(out, "serving ")
	if i < 0 {
		t.Fatalf("no URL in %q", out)
	}
	return strings.Fields(out[i+len("serving "):])[0]
}

func waitStarted(t *testing.T, dir string) {
	t.Helper()
	testnats.Eventually(t, 10*time.Second, func() error {
		_, err := datadir.LoadStarted(dir)
		return err
	})
}

// getKey reads key linearizably through a node's HTTP API.
func getValue(base, key string) (string, error) {
	resp, err := httpClient.Get(base + "/kv/" + key)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %d %s", key, resp.StatusCode, b)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	return v.Value, nil
}

// startDir starts a server on dir outside a srvCluster's bookkeeping, as a
// joiner or to bootstrap.
// join lists the members a joiner admits traffic from until it has
// received the cluster's membership (node.Config.JoinMembers).
func startDir(t *testing.T, ns *natsserver.Server, dir string, boot, join []node.Member, joining bool, tune node.Config) (*server.Server, error) {
	if tune.TickInterval == 0 {
		tune.TickInterval = 20 * time.Millisecond
	}
	tune.JoinMembers = join
	s, err := server.Start(server.Config{
		DataDir: dir, Conn: testnats.Connect(t, ns), Bootstrap: boot, Joining: joining,
		Node:   tune,
		Logger: testLogger(t).With("node", filepath.Base(dir)),
	})
	if err == nil {
		t.Cleanup(s.Stop)
	}
	return s, err
}

// Issue 8, items 2 and 4 at the server: once a member's first start
// succeeded, empty Raft state is refused whatever the caller says —
// joining, bootstrapping or neither — with ErrLostLog and a message that is
// not garbled.
func TestServerRefusesLostLogEvenWhenJoining(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	writeMany(t, c.up(), "k", 20, smallValue)
	c.waitSame(20)
	for _, dir := range c.dirs {
		waitStarted(t, dir)
	}
	c.servers[1].Stop()
	c.servers[1] = nil
	if err := os.RemoveAll(datadir.RaftDir(c.dirs[1])); err != nil {
		t.Fatal(err)
	}
	var boot []node.Member
	for _, id := range c.idents {
		boot = append(boot, node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey})
	}
	for _, tc := range []struct {
		name    string
		boot    []node.Member
		joining bool
	}{{"joining", nil, true}, {"bootstrap", boot, false}, {"plain restart", nil, false}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := startDir(t, c.nats[0], c.dirs[1], tc.boot, nil, tc.joining, node.Config{})
			if err == nil {
				s.Halt()
				t.Fatal("a member that lost its Raft log was started")
			}
			if !errors.Is(err, server.ErrLostLog) {
				t.Fatalf("got %v, want ErrLostLog", err)
			}
			msg := err.Error()
			if strings.Count(msg, "data directory") != 1 || !strings.Contains(msg, "belongs to cluster "+c.cluster.String()) ||
				!strings.Contains(msg, "member remove n2") || !strings.Contains(msg, "wipe "+c.dirs[1]) {
				t.Fatalf("unclear refusal: %s", msg)
			}
		})
	}
	// The directory lock was released by every refusal.
	unlock, err := datadir.Lock(c.dirs[1])
	if err != nil {
		t.Fatalf("a refused start left the directory locked: %v", err)
	}
	_ = unlock()
}

// Issue 8, item 2: a joiner that crashed before its first Save (added, or
// about to be, but never contacted by the leader) restarts as a joiner;
// once it has received the cluster's state, losing it is refused.
func TestJoinerRestartsBeforeFirstSave(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	lead := c.waitLeader()
	writeMany(t, c.up(), "k", 20, smallValue)
	dir := filepath.Join(t.TempDir(), "n4")
	id, err := datadir.Create(dir, datadir.Identity{ClusterID: c.cluster, Name: "n4"})
	if err != nil {
		t.Fatal(err)
	}
	if id, err = datadir.SetRaftID(dir, 4); err != nil {
		t.Fatal(err)
	}
	s, err := startDir(t, c.nats[0], dir, nil, lead.Node().Members(), true, node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Halt() // a crash before the leader ever sent anything
	if _, err := datadir.LoadStarted(dir); !errors.Is(err, datadir.ErrNotStarted) {
		t.Fatalf("a joiner with empty Raft state recorded a first start: %v", err)
	}
	if s, err = startDir(t, c.nats[0], dir, nil, lead.Node().Members(), true, node.Config{}); err != nil {
		t.Fatalf("restart of a joiner that never received state: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := lead.Node().AddMember(ctx, node.Member{ID: 4, Name: "n4", Incarnation: id.Incarnation, PublicKey: id.PublicKey}); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 30*time.Second, func() error {
		if n := s.KV().Len(); n < 20 {
			return fmt.Errorf("n4 holds %d keys", n)
		}
		return nil
	})
	waitStarted(t, dir)
	s.Halt()
	if err := os.RemoveAll(datadir.RaftDir(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := startDir(t, c.nats[0], dir, nil, lead.Node().Members(), true, node.Config{}); !errors.Is(err, server.ErrLostLog) {
		t.Fatalf("a joined member that lost its log restarted as a joiner: %v", err)
	}
}
