package test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
)

// Found by running the README's secured walkthrough by hand with the three
// nodes started together: a joiner that came up before the bootstrap node
// had created the membership stream exited with "cannot join: stream not
// found". It now says what it waits for, waits, and joins once the
// cluster exists and the operator adds it.
func TestJoinerStartedBeforeTheClusterWaits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test skipped in -short mode")
	}
	c := &e2e{t: t, servers: e2eServers(t), root: t.TempDir(), nodes: map[string]*e2eNode{}}
	ports := []int{testnats.FreePort(t), testnats.FreePort(t)}
	dir1 := filepath.Join(c.root, "n1")
	mustCLI(t, "node", "init", "--data", dir1, "--name", "n1", "--bootstrap")
	id, err := datadir.Load(dir1)
	if err != nil {
		t.Fatal(err)
	}
	c.cluster = id.ClusterID.String()

	n2 := c.startNode("n2", filepath.Join(c.root, "n2"), ports[1], 1, "raftbus", "--join", "--cluster", c.cluster)
	n2.proc.waitOutput(t, 30*time.Second, "not found yet: waiting for the cluster's bootstrap node")
	if n2.proc.exited() {
		t.Fatal("the early joiner exited")
	}
	n1 := c.startNode("n1", dir1, ports[0], 0, "raftbus")
	c.waitLeader(n1)
	n2.proc.waitOutput(t, 30*time.Second, "waiting to be added")
	c.mustMember("add", "n2")
	c.waitLeader(n2)
}
