package test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
)

// e2e is a raftbus cluster of separate OS processes over an in-process
// three-server NATS cluster.
type e2e struct {
	t       *testing.T
	servers []*natsserver.Server
	root    string
	cluster string
	nodes   map[string]*e2eNode // by name; replaced nodes keep their name
}

type e2eNode struct {
	name string
	dir  string
	port int
	proc *proc
	url  string
}

// The users of the test NATS cluster: nodes and operators have full rights;
// "stale" may use raftbus subjects but not the JetStream API (a credential
// left over from before, say); "reader" may not publish membership
// requests.
func e2eServers(t *testing.T) []*natsserver.Server {
	return testnats.RunClusterWith(t, 3, func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "raftbus", Password: "s3cret"},
			{Username: "stale", Password: "s3cret", Permissions: &natsserver.Permissions{
				Publish:   &natsserver.SubjectPermission{Allow: []string{"raftbus.*.*.*.*"}},
				Subscribe: &natsserver.SubjectPermission{Allow: []string{"raftbus.>", "_INBOX.>"}},
			}},
			{Username: "reader", Password: "s3cret", Permissions: &natsserver.Permissions{
				Publish: &natsserver.SubjectPermission{Allow: []string{"$JS.API.>"}, Deny: []string{"raftbus.*.members.request"}},
			}},
		}
	})
}

func (c *e2e) natsURL(i int) string {
	var urls []string
	for k := range c.servers {
		s := c.servers[(i+k)%len(c.servers)]
		if s.Running() {
			urls = append(urls, s.ClientURL())
		}
	}
	return strings.Join(urls, ",")
}

func (c *e2e) auth(user string) []string { return []string{"--user", user, "--password", "s3cret"} }

// memberCmd runs `raftbus member ...` against the cluster as an operator.
func (c *e2e) member(args ...string) (string, string, int) {
	full := append([]string{"member"}, args...)
	full = append(full, "-s", c.natsURL(0), "--cluster", c.cluster, "--timeout", "20s")
	full = append(full, c.auth("raftbus")...)
	return runBinary(c.t, full...)
}

func (c *e2e) mustMember(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.member(args...)
	if code != 0 {
		c.t.Fatalf("raftbus member %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// startNode runs `raftbus node` for name on NATS server i.
func (c *e2e) startNode(name, dir string, port, i int, user string, extra ...string) *e2eNode {
	args := []string{"node", "--data", dir, "--name", name, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-s", c.natsURL(i), "--tick", "50ms", "--log-level", "info", "--members-replicas", "3"}
	args = append(args, c.auth(user)...)
	args = append(args, extra...)
	n := &e2eNode{name: name, dir: dir, port: port, url: localURL(port), proc: startProc(c.t, name, args...)}
	return n
}

type nodeStatus struct {
	ID          string            `json:"id"`
	Incarnation string            `json:"incarnation"`
	Leader      string            `json:"leader"`
	Dropped     map[string]uint64 `json:"transport_dropped"`
	Members     []struct {
		ID          string `json:"id"`
		Incarnation string `json:"incarnation"`
	} `json:"members"`
}

func status(url string) (nodeStatus, error) {
	var st nodeStatus
	resp, err := httpClient.Get(url + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status: %v: %s", err, b)
	}
	return st, nil
}

func (c *e2e) waitLeader(n *e2eNode) {
	c.t.Helper()
	testnats.Eventually(c.t, 30*time.Second, func() error {
		if n.proc.exited() {
			c.t.Fatalf("%s exited: %s", n.name, lastLines(n.proc.err.text(), 20))
		}
		st, err := status(n.url)
		if err != nil {
			return err
		}
		if st.Leader == "0000000000000000" {
			return fmt.Errorf("%s has no leader", n.name)
		}
		return nil
	})
}

func (c *e2e) writeKeys(prefix string, count int, via ...*e2eNode) {
	c.t.Helper()
	for k := 0; k < count; k++ {
		n := via[k%len(via)]
		key := fmt.Sprintf("%s-%04d", prefix, k)
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, _, err := put(n.url, key, []byte(key))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("write %s via %s: %v", key, n.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// checkKeys reads every key from every node (serializable, after waiting
// for the node to catch up).
func (c *e2e) checkKeys(prefix string, count int, nodes ...*e2eNode) {
	c.t.Helper()
	for _, n := range nodes {
		testnats.Eventually(c.t, 30*time.Second, func() error {
			for k := count - 1; k >= 0; k-- {
				key := fmt.Sprintf("%s-%04d", prefix, k)
				resp, err := httpClient.Get(n.url + "/kv/" + key + "?serializable=true")
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("%s: %s answered %d", n.name, key, resp.StatusCode)
				}
			}
			return nil
		})
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v %s", src, dst, err, out)
	}
}

// The address-reuse scenario end to end, with raftbus nodes as separate
// processes on a three-server NATS cluster: bootstrap, join two nodes (one
// as learner, then promoted), write, remove node 2, replace it by a new
// incarnation on the same name, HTTP port and data path, and bring the old
// node 2 back from a saved copy of its data while writing more.
func TestMembershipAddressReuseEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test skipped in -short mode")
	}
	c := &e2e{t: t, servers: e2eServers(t), root: t.TempDir(), nodes: map[string]*e2eNode{}}
	ports := []int{testnats.FreePort(t), testnats.FreePort(t), testnats.FreePort(t), testnats.FreePort(t)}

	// 1. Three nodes: n1 bootstraps, n2 joins as a voter, n3 as a learner
	// that is then promoted.
	n1 := c.startNode("n1", filepath.Join(c.root, "n1"), ports[0], 0, "raftbus", "--bootstrap")
	c.waitLeader(n1)
	id, err := datadir.Load(n1.dir)
	if err != nil {
		t.Fatal(err)
	}
	c.cluster = id.ClusterID.String()
	testnats.Eventually(t, 30*time.Second, func() error {
		_, e, code := c.member("list")
		if code != 0 {
			return fmt.Errorf("member list: %d %s", code, e)
		}
		return nil
	})
	n2 := c.startNode("n2", filepath.Join(c.root, "n2"), ports[1], 1, "raftbus", "--join", "--cluster", c.cluster)
	n2.proc.waitOutput(t, 30*time.Second, "waiting to be added")
	out := c.mustMember("add", "n2")
	if !strings.Contains(out, "Member 0000000000000002 added") || !strings.Contains(out, "raftbus node --join") {
		t.Fatalf("member add output:\n%s", out)
	}
	c.waitLeader(n2)
	n3 := c.startNode("n3", filepath.Join(c.root, "n3"), ports[2], 2, "raftbus", "--join", "--cluster", c.cluster)
	n3.proc.waitOutput(t, 30*time.Second, "waiting to be added")
	if out := c.mustMember("add", "n3", "--learner"); !strings.Contains(out, "added as learner") {
		t.Fatalf("learner add output:\n%s", out)
	}
	c.waitLeader(n3)
	if out := c.mustMember("promote", "n3"); !strings.Contains(out, "promoted") {
		t.Fatalf("promote output:\n%s", out)
	}
	list := c.mustMember("list")
	for _, want := range []string{"n1", "n2", "n3", "voter", "alive", "*"} {
		if !strings.Contains(list, want) {
			t.Fatalf("member list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "learner") {
		t.Fatalf("n3 still a learner after promote:\n%s", list)
	}
	c.writeKeys("a", 1000, n1, n2, n3)

	// 2. Save node 2's data (stopped cleanly for a consistent copy), bring it
	// back, then remove it: it stops itself.
	if code := n2.proc.interrupt(t); code != 0 {
		t.Fatalf("n2 exited %d on SIGINT", code)
	}
	saved := filepath.Join(c.root, "n2-saved")
	copyDir(t, n2.dir, saved)
	oldInc := mustIdentity(t, n2.dir).Incarnation.String()
	n2 = c.startNode("n2", n2.dir, ports[1], 1, "raftbus")
	c.waitLeader(n2)
	c.mustMember("remove", "n2")
	if code := n2.proc.waitExit(t, 30*time.Second); code == 0 {
		t.Fatalf("removed n2 exited with 0")
	}
	if e := n2.proc.err.text() + n2.proc.out.text(); !strings.Contains(e, "removed") || !strings.Contains(e, "wipe") {
		t.Fatalf("removed n2 did not say why it stopped:\n%s", lastLines(e, 10))
	}

	// 3. A new node on n2's name, HTTP port and (wiped) data path joins.
	if err := os.RemoveAll(n2.dir); err != nil {
		t.Fatal(err)
	}
	newN2 := c.startNode("n2", n2.dir, ports[1], 1, "raftbus", "--join", "--cluster", c.cluster)
	newN2.proc.waitOutput(t, 30*time.Second, "waiting to be added")
	if out := c.mustMember("add", "n2"); !strings.Contains(out, "Member 0000000000000004 added") {
		t.Fatalf("replacement got another ID than 4 (IDs are never reused):\n%s", out)
	}
	c.waitLeader(newN2)
	newInc := mustIdentity(t, newN2.dir).Incarnation.String()
	if newInc == oldInc {
		t.Fatal("the wiped directory reused the old incarnation")
	}

	// The old node 2 comes back from its saved data, with a stale credential
	// that cannot read the membership stream, and keeps talking while we
	// write 1,000 more keys.
	old := c.startNode("n2", saved, ports[3], 2, "stale")
	c.writeKeys("b", 1000, n1, newN2, n3)
	testnats.Eventually(t, 30*time.Second, func() error {
		var n uint64
		for _, x := range []*e2eNode{n1, n3} {
			st, err := status(x.url)
			if err != nil {
				return err
			}
			n += st.Dropped["tombstoned"]
		}
		if n == 0 {
			return fmt.Errorf("no tombstoned drops at n1/n3 yet")
		}
		return nil
	})
	if old.proc.exited() {
		t.Fatalf("the old node 2 exited instead of talking to the cluster:\n%s", lastLines(old.proc.err.text(), 10))
	}

	// 4. Checks.
	current := []*e2eNode{n1, newN2, n3}
	c.checkKeys("a", 1000, current...)
	c.checkKeys("b", 1000, current...)
	for _, x := range current {
		st, err := status(x.url)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dropped["wrong_destination"] != 0 {
			t.Fatalf("%s dropped misdirected traffic: %v", x.name, st.Dropped)
		}
		for _, m := range st.Members {
			if m.Incarnation == oldInc {
				t.Fatalf("%s still lists the old incarnation as a member", x.name)
			}
		}
	}
	st, err := status(old.url)
	if err == nil && st.Leader != "0000000000000000" && st.Leader != st.ID {
		// The old node may believe in a leader it last saw, but it must hold
		// none of the new writes.
		resp, err := httpClient.Get(old.url + "/kv/b-0999?serializable=true")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("the old node 2 received writes made after its removal")
			}
		}
	}
	// With full credentials the old node learns its removal from the stream
	// and stops itself.
	old.proc.interrupt(t)
	old = c.startNode("n2", saved, ports[3], 2, "raftbus")
	if code := old.proc.waitExit(t, 30*time.Second); code == 0 {
		t.Fatal("the old node 2 restarted with full credentials did not stop itself")
	}
	if !strings.Contains(old.proc.err.text()+old.proc.out.text(), "removed") {
		t.Fatalf("the old node did not say it was removed:\n%s", lastLines(old.proc.err.text(), 10))
	}

	hist := c.mustMember("history")
	steps := []string{"committed at index", "add 0000000000000002", "add-learner 0000000000000003", "promote 0000000000000003",
		"remove 0000000000000002", "add 0000000000000004"}
	at := 0
	for _, line := range strings.Split(hist, "\n") {
		if at < len(steps) && strings.Contains(line, "committed") && strings.Contains(line, steps[at]) {
			at++
		} else if at == 0 && strings.Contains(line, steps[0]) {
			at = 1
		}
	}
	if at < len(steps) {
		t.Fatalf("member history lacks step %q in order:\n%s", steps[at], hist)
	}
	for _, x := range []*e2eNode{n1, newN2, n3, old} {
		if x.proc.panicked() {
			t.Fatalf("%s panicked", x.name)
		}
	}
	for _, x := range []*e2eNode{n1, newN2, n3} {
		if code := x.proc.interrupt(t); code != 0 {
			t.Fatalf("%s exited %d on SIGINT", x.name, code)
		}
	}
}

func mustIdentity(t *testing.T, dir string) *datadir.Identity {
	t.Helper()
	id, err := datadir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
