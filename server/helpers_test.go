package server

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
)

func testLogger() *slog.Logger {
	if os.Getenv("RAFTBUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testCluster bootstraps members voters and starts the first `start` of
// them, each a complete Server on one embedded NATS server. adjust, if
// set, changes every node's Config before it starts.
type testCluster struct {
	t       *testing.T
	ns      *natsserver.Server
	dirs    []string
	boot    []node.Member
	servers []*Server
}

func newTestCluster(t *testing.T, members, start int, adjust func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, ns: testnats.Run(t, nil)}
	cluster := uuid.New()
	root := t.TempDir()
	for i := 1; i <= members; i++ {
		dir := filepath.Join(root, fmt.Sprintf("n%d", i))
		id, err := datadir.Create(dir, datadir.Identity{ClusterID: cluster, RaftID: uint64(i), Name: fmt.Sprintf("n%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		c.dirs = append(c.dirs, dir)
		c.boot = append(c.boot, node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey})
	}
	for i := range start {
		cfg := Config{
			DataDir: c.dirs[i], Conn: testnats.Connect(t, c.ns), Bootstrap: c.boot,
			Node:   node.Config{TickInterval: 10 * time.Millisecond},
			Logger: testLogger().With("node", fmt.Sprintf("n%d", i+1)),
		}
		if adjust != nil {
			adjust(&cfg)
		}
		s, err := Start(cfg)
		if err != nil {
			t.Fatalf("start n%d: %v", i+1, err)
		}
		t.Cleanup(s.Stop)
		c.servers = append(c.servers, s)
	}
	return c
}

// leader waits until every started node knows the same leader among them.
func (c *testCluster) leader() *Server {
	c.t.Helper()
	var lead *Server
	testnats.Eventually(c.t, 10*time.Second, func() error {
		lead = nil
		l := c.servers[0].Node().Leader()
		for _, s := range c.servers {
			if s.Node().Leader() != l || l == 0 {
				return fmt.Errorf("%s knows leader %x", s.Identity().Name, s.Node().Leader())
			}
			if s.Identity().RaftID == l {
				lead = s
			}
		}
		if lead == nil {
			return fmt.Errorf("leader %x is not running", l)
		}
		return nil
	})
	return lead
}

// get fetches url with client (http.DefaultClient if nil) and returns the
// status and body.
func get(t *testing.T, client *http.Client, url string, header ...string) (int, string) {
	t.Helper()
	return do(t, client, http.MethodGet, url, "", header...)
}

func do(t *testing.T, client *http.Client, method, url, body string, header ...string) (int, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
