package test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/kv"
)

// A sharded cluster, the way an operator runs one, under the permissions
// nats-config generates: n1 bootstraps four groups, n2 and n3 join and are
// added to every group with 'member add --group', every key is served
// through every node; then n3 is removed from group 2 only: its node of
// group 2 stops, it goes on serving the other groups, group 2 goes on
// without it, and nothing is refused by the server.
func TestShardedClusterUnderGeneratedPermissions(t *testing.T) {
	const groups = 4
	g := fmt.Sprint(groups)
	c := newSecCluster(t, "n2", "n3")
	nodes := map[string]*secProc{"n1": c.startNode(t, "n1", "--groups", g)}
	urls := map[string]string{"n1": nodes["n1"].url(t, 30*time.Second)}
	c.waitStream(t)
	for _, name := range []string{"n2", "n3"} {
		var added string
		nodes[name], urls[name], added = c.joinNode(t, name, "--groups", g)
		if !strings.Contains(added, "--groups "+g) {
			t.Errorf("member add prints a start command without --groups %s:\n%s", g, added)
		}
		for gr := 1; gr < groups; gr++ {
			c.memberRetry(t, "add", name, "--group", fmt.Sprint(gr))
		}
	}
	keys := make([]string, groups) // one key of every group
	for gr := range keys {
		keys[gr] = keyOfGroup(gr, groups)
	}
	for i, k := range keys {
		secPut(t, urls[fmt.Sprintf("n%d", i%3+1)], k, "v1")
	}
	for name, u := range urls {
		for _, k := range keys {
			waitValue(t, name, u, k, "v1")
		}
	}
	if out := c.member(t, "list", "--group", "2"); !strings.Contains(out, "n3") || !strings.Contains(out, "Group 2") {
		t.Fatalf("member list --group 2 does not show n3 in group 2:\n%s", out)
	}

	c.member(t, "remove", "n3", "--group", "2")
	if out := c.member(t, "list", "--group", "2"); strings.Contains(out, "n3 ") {
		t.Fatalf("n3 still listed in group 2 after its removal:\n%s", out)
	}
	if out := c.member(t, "list", "--group", "1"); !strings.Contains(out, "n3") {
		t.Fatalf("n3 gone from group 1 too:\n%s", out)
	}
	for i, k := range keys {
		secPut(t, urls["n1"], k, "v2")
		for name, u := range urls {
			if name == "n3" && i == 2 {
				continue // n3 no longer holds group 2
			}
			waitValue(t, name, u, k, "v2")
		}
	}
	select {
	case <-nodes["n3"].done:
		t.Fatalf("n3 exited after its removal from one group of %d: %s", groups, lastLines(nodes["n3"].errOut.String(), 10))
	default:
	}
	if n := c.viol.Count(); n != 0 {
		t.Fatalf("%d permission violations under the generated permissions:\n%s", n, strings.Join(c.viol.Lines(), "\n"))
	}
	if kv.ShardOf(keys[2], groups) != 2 {
		t.Fatal("keyOfGroup disagrees with kv.ShardOf")
	}
}

// waitValue waits until node name at u reads key as want.
func waitValue(t *testing.T, name, u, key, want string) {
	t.Helper()
	testnats.Eventually(t, 20*time.Second, func() error {
		v, err := secGet(u, key)
		if err == nil && v != want {
			err = errors.New(name + " reads " + key + "=" + v)
		}
		return err
	})
}
