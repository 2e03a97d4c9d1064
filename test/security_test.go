package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/cli"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
)

// secBuffer is an io.Writer a running command and the test share.
type secBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *secBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *secBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secProc is a raftbus command running in this process (cli.Main).
type secProc struct {
	name        string
	cancel      context.CancelFunc
	out, errOut secBuffer
	done        chan struct{}
	code        int
}

func secStart(t *testing.T, name string, args ...string) *secProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &secProc{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.code = cli.Main(ctx, args, &p.out, &p.errOut)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s\n--- %s stderr (last 30 lines):\n%s", name, p.out.String(), name, lastLines(p.errOut.String(), 30))
		}
	})
	return p
}

func (p *secProc) stop(t *testing.T) {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s", p.name)
	}
}

var secServingRe = regexp.MustCompile(`serving (http://\S+)`)

// url waits until the node serves and returns its HTTP URL.
func (p *secProc) url(t *testing.T, within time.Duration) string {
	t.Helper()
	var u string
	testnats.Eventually(t, within, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited with %d: %s", p.name, p.code, lastLines(p.errOut.String(), 10))
		default:
		}
		m := secServingRe.FindStringSubmatch(p.out.String())
		if m == nil {
			return fmt.Errorf("%s not serving yet", p.name)
		}
		u = m[1]
		return nil
	})
	return u
}

func secMain(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("raftbus %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	}
	return out.String()
}

// secCluster is a set of data directories initialised with node init
// and a nats-server configured with the block nats-config printed.
type secCluster struct {
	cluster  uuid.UUID
	dirs     map[string]string
	ids      map[string]*datadir.Identity
	adminKey string
	srv      *natsserver.Server
	viol     *testnats.Violations
	conf     string
}

// newSecCluster initialises n1 to bootstrap and the other names to
// join, then starts the server with the generated authorization block.
func newSecCluster(t *testing.T, joiners ...string) *secCluster {
	t.Helper()
	tmp := t.TempDir()
	c := &secCluster{dirs: map[string]string{}, ids: map[string]*datadir.Identity{}, adminKey: filepath.Join(tmp, "admin.nk")}
	var init struct {
		Cluster string `json:"cluster"`
	}
	c.dirs["n1"] = filepath.Join(tmp, "n1")
	if err := json.Unmarshal([]byte(secMain(t, "node", "init", "--data", c.dirs["n1"], "--name", "n1", "--bootstrap", "-w", "json")), &init); err != nil {
		t.Fatal(err)
	}
	c.cluster = uuid.MustParse(init.Cluster)
	args := []string{"nats-config", "--data", c.dirs["n1"], "--admin-key-out", c.adminKey}
	for _, name := range joiners {
		c.dirs[name] = filepath.Join(tmp, name)
		secMain(t, "node", "init", "--data", c.dirs[name], "--name", name, "--cluster", c.cluster.String())
		args = append(args, "--data", c.dirs[name])
	}
	for name, dir := range c.dirs {
		id, err := datadir.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		c.ids[name] = id
	}
	c.conf = secMain(t, args...)
	c.srv, c.viol = testnats.RunWithConfig(t, c.conf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server permission violations: %d\n%s", c.viol.Count(), strings.Join(c.viol.Lines(), "\n"))
		}
	})
	return c
}

func (c *secCluster) startNode(t *testing.T, name string, extra ...string) *secProc {
	args := []string{"node", "--data", c.dirs[name], "--name", name, "-s", c.srv.ClientURL(), "--listen", "127.0.0.1:0",
		"--log-level", "warn", "--tick", "50ms"}
	args = append(args, extra...)
	if name != "n1" {
		args = append(args, "--join", "--cluster", c.cluster.String())
	}
	return secStart(t, name, args...)
}

// joinNode starts name as a joiner, waits until it announced itself,
// adds it as the admin and returns it with its HTTP URL and what
// 'member add' printed.
func (c *secCluster) joinNode(t *testing.T, name string, extra ...string) (*secProc, string, string) {
	t.Helper()
	p := c.startNode(t, name, extra...)
	testnats.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(p.out.String(), "announced") {
			return fmt.Errorf("%s not announced", name)
		}
		return nil
	})
	out := c.memberRetry(t, "add", name)
	return p, p.url(t, 30*time.Second), out
}

// memberRetry retries a member command while the cluster is settling
// (the first committed record not written yet, say).
func (c *secCluster) memberRetry(t *testing.T, args ...string) string {
	t.Helper()
	var printed string
	full := append([]string{"member"}, append(args, "--cluster", c.cluster.String(), "-s", c.srv.ClientURL(),
		"--nkey", c.adminKey, "--timeout", "20s")...)
	testnats.Eventually(t, 40*time.Second, func() error {
		var out, errOut bytes.Buffer
		if code := cli.Main(context.Background(), full, &out, &errOut); code != 0 {
			return fmt.Errorf("raftbus %s: exit %d: %s", strings.Join(full, " "), code, errOut.String())
		}
		printed = out.String()
		return nil
	})
	return printed
}

func (c *secCluster) member(t *testing.T, args ...string) string {
	t.Helper()
	return secMain(t, append([]string{"member"}, append(args, "--cluster", c.cluster.String(), "-s", c.srv.ClientURL(),
		"--nkey", c.adminKey, "--timeout", "20s")...)...)
}

// waitStream waits, as the admin, until the bootstrap leader created the
// membership stream.
func (c *secCluster) waitStream(t *testing.T) {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(c.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.srv.ClientURL(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Stream(ctx, membership.StreamName("raftbus", c.cluster))
		return err
	})
}

func secStatus(u string) (struct {
	Leader  string `json:"leader"`
	ID      string `json:"id"`
	Members []any  `json:"members"`
}, error) {
	var st struct {
		Leader  string `json:"leader"`
		ID      string `json:"id"`
		Members []any  `json:"members"`
	}
	resp, err := httpClient.Get(u + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return st, json.Unmarshal(b, &st)
}

func secPut(t *testing.T, u, key, value string) {
	t.Helper()
	testnats.Eventually(t, 20*time.Second, func() error {
		_, _, err := put(u, key, []byte(value))
		return err
	})
}

func secGet(u, key string) (string, error) {
	resp, err := httpClient.Get(u + "/kv/" + key)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		Value string `json:"value"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &v) != nil {
		return "", fmt.Errorf("GET %s: %d %s", key, resp.StatusCode, b)
	}
	return v.Value, nil
}

// Issue 9: a 3-node cluster set up as the README says (node init,
// nats-config, a nats-server with the pasted block) runs, adds and removes
// a node and fails over, and the server logs no permission violation.
func TestSecuredClusterUnderGeneratedPermissions(t *testing.T) {
	c := newSecCluster(t, "n2", "n3", "n4")
	nodes := map[string]*secProc{"n1": c.startNode(t, "n1")}
	urls := map[string]string{"n1": nodes["n1"].url(t, 20*time.Second)}
	secPut(t, urls["n1"], "k0", "v0")
	c.waitStream(t)
	// The same users can be generated from the stream's verified
	// announcements (connecting as the admin) plus a new directory.
	testnats.Eventually(t, 20*time.Second, func() error {
		var out, errOut bytes.Buffer
		code := cli.Main(context.Background(), []string{"nats-config", "--cluster", c.cluster.String(), "-s", c.srv.ClientURL(),
			"--nkey", c.adminKey, "--admin-nkey", c.adminKey, "--data", c.dirs["n2"], "-w", "json"}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), c.ids["n1"].PublicKey) || !strings.Contains(out.String(), c.ids["n2"].PublicKey) {
			return fmt.Errorf("nats-config --cluster: exit %d\n%s%s", code, out.String(), errOut.String())
		}
		return nil
	})

	for _, name := range []string{"n2", "n3", "n4"} {
		nodes[name], urls[name], _ = c.joinNode(t, name)
	}
	secPut(t, urls["n2"], "k1", "v1")
	testnats.Eventually(t, 20*time.Second, func() error {
		v, err := secGet(urls["n4"], "k1")
		if err == nil && v != "v1" {
			err = fmt.Errorf("n4 reads %q", v)
		}
		return err
	})

	// Remove n4: it stops itself.
	c.member(t, "remove", "n4")
	select {
	case <-nodes["n4"].done:
	case <-time.After(30 * time.Second):
		t.Fatal("removed n4 did not stop")
	}
	delete(nodes, "n4")

	// Fail over: stop the leader; the other two elect one and take writes.
	st, err := secStatus(urls["n1"])
	if err != nil {
		t.Fatal(err)
	}
	var leader string
	for name := range nodes {
		if s, err := secStatus(urls[name]); err == nil && s.ID == st.Leader {
			leader = name
		}
	}
	if leader == "" {
		t.Fatalf("leader %s is none of the nodes", st.Leader)
	}
	nodes[leader].stop(t)
	delete(nodes, leader)
	for name := range nodes {
		secPut(t, urls[name], "after-"+name, "ok")
	}
	if n := c.viol.Count(); n != 0 {
		t.Fatalf("%d permission violations under the generated permissions:\n%s", n, strings.Join(c.viol.Lines(), "\n"))
	}
}

// secConnectAs connects with the nkey of a data directory and the node's
// inbox prefix, as a node does.
func secConnectAs(t *testing.T, url, dir string, id *datadir.Identity, w *testnats.PermWatcher) *nats.Conn {
	t.Helper()
	kp, err := datadir.LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Nkey(id.PublicKey, kp.Sign), nats.CustomInboxPrefix("_INBOX."+id.Incarnation.String()),
		nats.ErrorHandler(w.Handler))
	if err != nil {
		t.Fatalf("connect as %s: %v", id.Name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Issue 9: with node A's credentials, everything that would act as B, as
// the admin or on the stream's configuration is refused by the server; a
// heartbeat forged as B cannot even be published. Without credentials
// nothing connects.
func TestNodeCredentialsActOnlyAsThatNode(t *testing.T) {
	c := newSecCluster(t, "n2")
	a, b := c.ids["n2"], c.ids["n1"]
	w := &testnats.PermWatcher{}
	nc := secConnectAs(t, c.srv.ClientURL(), c.dirs["n2"], a, w)
	pc := "raftbus." + c.cluster.String()
	st := membership.StreamName("raftbus", c.cluster)
	A, B := a.Incarnation.String(), b.Incarnation.String()

	// Allowed as itself: no violation.
	if err := nc.Publish(pc+"."+B+"."+A+".msg", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync(pc + "." + A + ".>"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("_INBOX." + A + ".x"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	pubs := []string{
		pc + "." + A + "." + B + ".msg", // a heartbeat (any Raft message) forged as B
		pc + "." + A + "." + B + ".snap",
		pc + ".members.announce." + B,
		pc + ".members.committed." + B,
		pc + ".members.outcome.r1." + B,
		pc + ".members.committed", // the old, unauthenticated subject
		pc + ".members.request",   // admin only
		pc + ".members." + A + ".x",
		"$JS.API.STREAM.DELETE." + st,
		"$JS.API.STREAM.UPDATE." + st,
		"$JS.API.STREAM.PURGE." + st,
		"$JS.API.STREAM.MSG.DELETE." + st,
		"$JS.API.STREAM.CREATE." + st, // n2 does not bootstrap
		"$JS.API.CONSUMER.CREATE.OTHER.c1",
		"$JS.API.CONSUMER.DURABLE.CREATE." + st + ".d1",
		"$JS.API.STREAM.CREATE.OTHER",
	}
	for _, s := range pubs {
		if err := nc.Publish(s, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		w.Refused(t, s)
	}
	subs := []string{pc + "." + B + ".>", "_INBOX.>", "_INBOX." + B + ".>", pc + ".>", ">"}
	for _, s := range subs {
		if _, err := nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
		w.Refused(t, s)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := len(w.Violations()), len(pubs)+len(subs); got != want {
		t.Fatalf("%d violations, want %d: %v", got, want, w.Violations())
	}
	if got := c.viol.Count(); got < len(pubs)+len(subs) {
		t.Fatalf("server logged %d violations, want %d", got, len(pubs)+len(subs))
	}

	// No credentials, or an unknown key: nothing connects.
	if nc, err := nats.Connect(c.srv.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	stranger, _ := nkeys.CreateUser()
	pub, _ := stranger.PublicKey()
	if nc, err := nats.Connect(c.srv.ClientURL(), nats.Nkey(pub, stranger.Sign), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with an unknown nkey")
	}
}

var secNATSRe = regexp.MustCompile(`NATS: (nats://\S+) \(secured: .* --nkey (\S+)\)`)

// Issue 9: raftbus up is secured by default: nothing connects without
// credentials, the printed admin key runs 'member list', and no node is
// denied anything. --insecure says it is open.
func TestUpSecuredByDefault(t *testing.T) {
	data := t.TempDir()
	up := secStart(t, "up", "up", "--nodes", "3", "--data", data, "--log-level", "warn", "--no-sync")
	testnats.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(up.out.String(), "Press Ctrl-C to stop") {
			return fmt.Errorf("not up yet:\n%s\n%s", up.out.String(), up.errOut.String())
		}
		return nil
	})
	m := secNATSRe.FindStringSubmatch(up.out.String())
	if m == nil {
		t.Fatalf("no secured NATS line in:\n%s", up.out.String())
	}
	url, key := m[1], m[2]
	if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected to raftbus up's server without credentials")
	}
	u := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(up.out.String()[strings.Index(up.out.String(), "NAME"):])
	secPut(t, u, "greeting", "hello")
	cluster := regexp.MustCompile(`raftbus cluster ([0-9a-f-]{36}) is up`).FindStringSubmatch(up.out.String())[1]
	testnats.Eventually(t, 20*time.Second, func() error {
		var out, errOut bytes.Buffer
		if code := cli.Main(context.Background(), []string{"member", "list", "-s", url, "--nkey", key, "--cluster", cluster}, &out, &errOut); code != 0 {
			return fmt.Errorf("member list: exit %d: %s", code, errOut.String())
		}
		if strings.Count(out.String(), " alive ") < 3 {
			return fmt.Errorf("member list:\n%s", out.String())
		}
		return nil
	})
	if strings.Contains(up.errOut.String(), "NATS denied") {
		t.Fatalf("a node was denied a publish or subscribe:\n%s", up.errOut.String())
	}
	up.stop(t)
	if up.code != 0 {
		t.Fatalf("up exited %d", up.code)
	}

	open := secStart(t, "up-insecure", "up", "--nodes", "1", "--insecure", "--log-level", "warn", "--no-sync")
	testnats.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(open.out.String(), "insecure: no authentication") {
			return fmt.Errorf("no insecure notice:\n%s", open.out.String())
		}
		return nil
	})
}
