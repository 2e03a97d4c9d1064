package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

// See lincheck_test.go for the model, the modes and where failing
// histories go.

// linTune makes the clusters of the suite snapshot and compact often, so
// that restarts and catch-up go through snapshots.
var linTune = node.Config{TickInterval: 20 * time.Millisecond, SnapshotEntries: 200, CompactionOverhead: 50}

// churnTune snapshots rarely enough that, when a member is added, the
// latest snapshot predates it for several seconds of load, with the log
// compacted behind it: the seed scenario of issue 8, item 1.
var churnTune = node.Config{TickInterval: 20 * time.Millisecond, SnapshotEntries: 300, CompactionOverhead: 50}

// linCluster is a durable cluster of in-process nodes (server.Server) whose
// nodes can be halted, restarted, paused, removed and replaced while
// clients run.
type linCluster struct {
	// t is the current (sub)test, for failures; root owns the cleanups, so
	// that nodes restarted in one subtest outlive it.
	t        *testing.T
	root     *testing.T
	cluster  uuid.UUID
	replicas int
	tune     node.Config
	// groups is the Raft group count of every node (server.Config.Groups):
	// the workload's keys then spread over all groups.
	groups int
	// natsURL is node i's NATS URL list; proxies[i], when set, sits between
	// node i and its server so that its link can be stalled.
	natsURL func(i int) string
	proxies []*testnats.Proxy
	nats    *testnats.ProxiedCluster // set on a three-server NATS cluster
	nextID  atomic.Uint64            // the next Raft ID to give a new member

	mu      sync.Mutex
	dirs    []string
	servers []*server.Server // nil while a node is down
	conns   []*nats.Conn
}

// newLinCluster bootstraps n nodes; natsURL gives node i's NATS URL.
func newLinCluster(t *testing.T, n, replicas, groups int, tune node.Config, natsURL func(i int) string) *linCluster {
	c := &linCluster{t: t, root: t, cluster: uuid.New(), replicas: replicas, tune: tune, natsURL: natsURL, groups: groups,
		servers: make([]*server.Server, n), conns: make([]*nats.Conn, n)}
	c.nextID.Store(uint64(n + 1))
	root := t.TempDir()
	var boot []node.Member
	for i := 1; i <= n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("n%d", i))
		id, err := datadir.Create(dir, datadir.Identity{ClusterID: c.cluster, RaftID: uint64(i), Name: fmt.Sprintf("n%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		c.dirs = append(c.dirs, dir)
		boot = append(boot, node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey})
	}
	for i := range c.dirs {
		c.start(i, boot, false)
	}
	return c
}

// newLinClusterProxied is a three-node cluster on one NATS server, each
// node behind its own proxy.
func newLinClusterProxied(t *testing.T, tune node.Config) *linCluster {
	return newLinClusterProxiedGroups(t, tune, 1)
}

// newLinClusterProxiedGroups is newLinClusterProxied with groups Raft
// groups on every node.
func newLinClusterProxiedGroups(t *testing.T, tune node.Config, groups int) *linCluster {
	ns := testnats.Run(t, nil)
	var proxies []*testnats.Proxy
	for range 3 {
		proxies = append(proxies, testnats.StartProxy(t, ns.Addr().String()))
	}
	c := newLinCluster(t, 3, 1, groups, tune, func(i int) string { return proxies[i].URL() })
	c.proxies = proxies
	return c
}

// newLinClusterOnNATSCluster is a three-node cluster on a three-server
// NATS cluster with proxied routes; node i prefers server i.
func newLinClusterOnNATSCluster(t *testing.T, groups int) *linCluster {
	pc := testnats.RunProxiedCluster(t, 3)
	c := newLinCluster(t, 3, 3, groups, linTune, pc.ClientURLs)
	c.nats = pc
	return c
}

// start runs node i from its data directory. A joining node is given the
// current members (join), as `raftbus node --join` reads them from the
// membership stream.
func (c *linCluster) start(i int, boot []node.Member, joining bool, join ...node.Member) *server.Server {
	c.t.Helper()
	tune := c.tune
	tune.JoinMembers = join
	nc, err := nats.Connect(c.natsURL(i), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.DontRandomize())
	if err != nil {
		c.t.Fatalf("n%d: connect to NATS: %v", i+1, err)
	}
	c.root.Cleanup(nc.Close)
	s, err := server.Start(server.Config{
		DataDir: c.dirs[i], Conn: nc, Bootstrap: boot, Joining: joining, MembersReplicas: c.replicas,
		Node: tune, Groups: c.groups,
		Logger: testLogger(c.t).With("node", fmt.Sprintf("n%d", i+1)),
	})
	if err != nil {
		nc.Close()
		c.t.Fatalf("start n%d: %v", i+1, err)
	}
	c.root.Cleanup(s.Halt)
	c.mu.Lock()
	c.servers[i], c.conns[i] = s, nc
	c.mu.Unlock()
	return s
}

// halt crashes node i: no leadership handover, no draining, and its NATS
// connection goes away with it.
func (c *linCluster) halt(i int) {
	c.mu.Lock()
	s, nc := c.servers[i], c.conns[i]
	c.servers[i], c.conns[i] = nil, nil
	c.mu.Unlock()
	if s != nil {
		s.Halt()
	}
	if nc != nil {
		nc.Close()
	}
}

// url is node i's HTTP API, or "" while it is down.
func (c *linCluster) url(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.servers[i] == nil {
		return ""
	}
	return c.servers[i].URL()
}

func (c *linCluster) size() int { return len(c.dirs) }

func (c *linCluster) server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// leader waits until every running node sees the same running leader and
// returns its index.
func (c *linCluster) leader() int {
	c.t.Helper()
	lead := -1
	testnats.Eventually(c.t, 30*time.Second, func() error {
		lead = -1
		var seen uint64
		for i := range c.dirs {
			s := c.server(i)
			if s == nil {
				continue
			}
			l := s.Node().Leader()
			if l == 0 || (seen != 0 && l != seen) {
				return fmt.Errorf("n%d sees leader %x", i+1, l)
			}
			seen = l
		}
		for i := range c.dirs {
			if s := c.server(i); s != nil && s.Identity().RaftID == seen {
				lead = i
			}
		}
		if lead < 0 {
			return fmt.Errorf("leader %x is not running", seen)
		}
		return nil
	})
	return lead
}

// follower returns a random running node other than the leader.
func (c *linCluster) follower(r *rand.Rand) int {
	lead := c.leader()
	for {
		if i := r.IntN(c.size()); i != lead && c.server(i) != nil {
			return i
		}
	}
}

// linHTTP is the workload's client: a short timeout, so that requests
// stuck behind a fault end as unknown outcomes and the client goes on.
var linHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// classify turns a transport error or an HTTP status and error code into
// the outcome of a put. Anything that may have reached a leader is
// unknown; only answers given before proposing are failures.
func classify(err error, status int, code string) outcome {
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		return outcomeFailed // never reached a node
	case err != nil:
		return outcomeUnknown // sent, and the connection broke or timed out
	case status == http.StatusOK:
		return outcomeOK
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge, status == http.StatusMethodNotAllowed:
		return outcomeFailed // refused before proposing
	case status == http.StatusServiceUnavailable && code == "no_leader":
		// node.Propose fails fast with ErrNoLeader before it proposes
		// (node/doc.go, item 7). Counting it as a failure checks that
		// contract: a no_leader write that shows up later is a violation.
		return outcomeFailed
	default:
		// 504 timeout, 503 proposal_dropped or stopped, 500: the proposal
		// may have been forwarded to a leader and may commit later.
		return outcomeUnknown
	}
}

func linPut(base, key, value string) outcome {
	req, err := http.NewRequest(http.MethodPut, base+"/kv/"+key, bytes.NewReader([]byte(value)))
	if err != nil {
		return outcomeFailed
	}
	resp, err := linHTTP.Do(req)
	if err != nil {
		return classify(err, 0, "")
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return outcomeOK // committed and applied, whatever happens to the body
	}
	var r struct {
		Code string `json:"code"`
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || json.Unmarshal(body, &r) != nil {
		return outcomeUnknown
	}
	return classify(nil, resp.StatusCode, r.Code)
}

// linGet is a linearizable read; ok is false when its result is unknown.
func linGet(base, key string) (kvOutput, bool) { return getKV(base + "/kv/" + key) }

func getKV(url string) (kvOutput, bool) {
	resp, err := linHTTP.Get(url)
	if err != nil {
		return kvOutput{}, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return kvOutput{}, false
	}
	var r struct {
		Value *string `json:"value"`
		Code  string  `json:"code"`
	}
	if json.Unmarshal(body, &r) != nil {
		return kvOutput{}, false
	}
	switch {
	case resp.StatusCode == http.StatusOK && r.Value != nil:
		return kvOutput{found: true, value: *r.Value}, true
	case resp.StatusCode == http.StatusNotFound && r.Code == "not_found":
		return kvOutput{}, true
	}
	return kvOutput{}, false
}

// workload runs concurrent clients, each preferring its own node, doing
// puts of unique values and linearizable gets on a few keys of one phase.
type workload struct {
	c      *linCluster
	h      *history
	prefix string
	keys   int
	writes int // percent of operations that are puts
	// epoch is part of every key: runFault moves to fresh keys after each
	// fault cycle, so that the unknown outcomes of many cycles do not pile
	// up on the same registers and blow up the checker's search.
	epoch atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWorkload(c *linCluster, h *history, prefix string, clients, writes int, seed uint64) *workload {
	w := &workload{c: c, h: h, prefix: prefix, keys: 3, writes: writes, stop: make(chan struct{})}
	for lane := range clients {
		w.wg.Add(1)
		go w.client(lane, rand.New(rand.NewPCG(seed, uint64(lane))))
	}
	return w
}

func (w *workload) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *workload) client(lane int, r *rand.Rand) {
	defer w.wg.Done()
	id := w.h.newClient()
	target := lane % w.c.size()
	for seq := 0; ; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		base := w.c.url(target)
		if base == "" { // down: another node serves this client meanwhile
			target = (target + 1) % w.c.size()
			w.backoff()
			continue
		}
		in := kvInput{key: fmt.Sprintf("%s-%d-%d", w.prefix, w.epoch.Load(), r.IntN(w.keys))}
		var out kvOutput
		var oc outcome
		call := w.h.now()
		if r.IntN(100) < w.writes {
			in.put, in.value = true, fmt.Sprintf("c%d.%d", id, seq)
			oc = linPut(base, in.key, in.value)
		} else {
			var ok bool
			if out, ok = linGet(base, in.key); ok {
				oc = outcomeOK
			} else {
				oc = outcomeFailed
			}
		}
		w.h.record(id, in, out, call, w.h.now(), oc)
		switch oc {
		case outcomeUnknown:
			id = w.h.newClient() // the pending put keeps the old lane
			w.backoff()
		case outcomeFailed:
			target = (target + 1) % w.c.size()
			w.backoff()
		}
	}
}

func (w *workload) backoff() {
	select {
	case <-w.stop:
	case <-time.After(20 * time.Millisecond):
	}
}

// fault is one kind of failure: inject breaks something and returns the
// function that repairs it.
type fault struct {
	name string
	// writes is the percentage of puts in the workload; 50 when zero.
	writes int
	inject func(t *testing.T, c *linCluster, r *rand.Rand) (heal func())
}

// holdFault keeps a fault in place: 2 s in short mode, 1-8 s in long mode.
func holdFault(r *rand.Rand) time.Duration {
	if longMode() {
		return time.Second + time.Duration(r.Int64N(int64(7*time.Second)))
	}
	return 2 * time.Second
}

// runFault runs the workload on c while f is injected and healed (once in
// short mode, repeatedly for faultTime in long mode), requires progress
// after every heal, and checks the history.
func runFault(t *testing.T, c *linCluster, f fault) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("%s: seed %d", f.name, seed)
	r := rand.New(rand.NewPCG(seed, 0))
	h := newHistory()
	writes := f.writes
	if writes == 0 {
		writes = 50
	}
	w := startWorkload(c, h, f.name, 4, writes, seed)
	// The history is checked however the phase ends, a failed progress
	// requirement or a t.Fatal inside a fault included.
	defer func() {
		w.halt()
		checkLinearizable(t, f.name, h)
	}()
	h.mark("start")
	if err := waitOK(h, "start", 20, 30*time.Second); err != nil {
		t.Fatalf("%s: no progress before the fault: %v", f.name, err)
	}
	end := time.Now().Add(faultTime())
	for cycle := 0; ; cycle++ {
		heal := f.inject(t, c, r)
		wait(holdFault(r))
		heal()
		mark := fmt.Sprintf("heal-%d", cycle)
		h.mark(mark)
		healed := time.Now()
		if err := waitOK(h, mark, 20, 60*time.Second); err != nil {
			t.Fatalf("%s: cycle %d: no progress after the fault healed: %v", f.name, cycle, err)
		}
		t.Logf("%s: cycle %d: 20 operations succeeded %v after the heal", f.name, cycle, time.Since(healed).Round(time.Millisecond))
		if !longMode() || time.Now().After(end) {
			break
		}
		wait(time.Duration(r.Int64N(int64(3 * time.Second))))
		w.epoch.Add(1)
	}
}

// wait lets a fault (or a quiet period) last d: the duration is the point,
// nothing is being waited for.
func wait(d time.Duration) { <-time.After(d) }

// waitOK polls until n operations called after mark succeeded.
func waitOK(h *history, mark string, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for h.okSince(mark) < n {
		if time.Now().After(deadline) {
			ops, ok, unknown := h.counts()
			return fmt.Errorf("%d of %d operations succeeded within %v (history: %d ops, %d ok, %d unknown)", h.okSince(mark), n, within, ops, ok, unknown)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// natsServerOf is the index of the NATS server node i is connected to
// (nodes reconnect elsewhere when their server dies).
func (c *linCluster) natsServerOf(i int) int {
	c.mu.Lock()
	nc := c.conns[i]
	c.mu.Unlock()
	if nc != nil {
		for k, s := range c.nats.Servers() {
			if s.Running() && strings.HasSuffix(nc.ConnectedUrl(), fmt.Sprintf(":%d", s.Addr().(*net.TCPAddr).Port)) {
				return k
			}
		}
	}
	return i % len(c.nats.Servers())
}

// The faults.

var killRestart = fault{"kill-restart", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	i := c.follower(r)
	c.halt(i)
	return func() { c.start(i, nil, false) }
}}

var leaderKill = fault{"leader-kill", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	i := c.leader()
	c.halt(i)
	return func() { c.start(i, nil, false) }
}}

var wholeCrash = fault{"whole-cluster-crash", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	c.leader()
	var wg sync.WaitGroup
	for i := range c.size() {
		wg.Add(1)
		go func() { defer wg.Done(); c.halt(i) }()
	}
	wg.Wait()
	return func() {
		for i := range c.size() {
			c.start(i, nil, false)
		}
	}
}}

// pause stalls a node's NATS link in both directions, as a SIGSTOP of the
// process would: it neither sends nor receives, and what was queued on
// either side flows when it resumes. The leader half of the time.
var pause = fault{"pause", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	i := c.leader()
	if r.IntN(2) == 0 {
		i = c.follower(r)
	}
	c.proxies[i].Pause()
	return c.proxies[i].Resume
}}

// natsServerKill kills the NATS server the leader is connected to; its
// nodes reconnect to another server, and the server comes back on the same
// ports and store.
var natsServerKill = fault{"nats-server-kill", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	i := c.natsServerOf(c.leader())
	c.nats.Kill(i)
	return func() {
		c.nats.Restart(t, i)
		c.nats.WaitMetaLeader(t, 30*time.Second)
	}
}}

// routePartition cuts the routes between the leader's server and another:
// nodes on the two servers cannot reach each other, both reach the third.
var routePartition = fault{"route-partition", 0, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	a := c.natsServerOf(c.leader())
	b := (a + 1 + r.IntN(2)) % 3
	c.nats.Partition(a, b)
	return func() {
		c.nats.Heal(a, b)
		c.nats.WaitRoutes(t, 30*time.Second)
	}
}}

// churn removes a follower and wipes its data directory; healing re-adds
// it under the same name as a new member (the seed scenario), starts it at
// once and requires it to serve a linearizable read within
// churnReadWithin. On a cluster whose latest snapshot predates the add and
// whose log is compacted, that needs a snapshot that covers the new
// member (issue 8, item 1).
var churn = fault{"membership-churn", 20, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	i := c.follower(r)
	victim := c.server(i)
	removeID := victim.Identity().RaftID
	// With many groups, from every group: a node stops once it belongs
	// to none.
	for g := range c.groupCount() {
		changeGroupMembership(t, c, g, func(ctx context.Context, n *node.Node) error {
			_, err := n.RemoveMember(ctx, removeID)
			return err
		})
	}
	select {
	case <-victim.Done():
	case <-time.After(20 * time.Second):
		t.Errorf("removed n%d did not stop itself within 20s", i+1)
	}
	c.halt(i)
	if err := os.RemoveAll(c.dirs[i]); err != nil {
		t.Fatal(err)
	}
	return func() {
		id, err := datadir.Create(c.dirs[i], datadir.Identity{ClusterID: c.cluster, RaftID: c.nextID.Add(1) - 1, Name: fmt.Sprintf("n%d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		m := node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey}
		for g := range c.groupCount() {
			changeGroupMembership(t, c, g, func(ctx context.Context, n *node.Node) error {
				_, err := n.AddMember(ctx, m)
				return err
			})
		}
		s := c.start(i, nil, true, c.server(c.leader()).Node().Members()...)
		began := time.Now()
		// A key of every group: the new member must serve each of them.
		for g := range c.groupCount() {
			for {
				if _, ok := linGet(s.URL(), keyOfGroup(g, c.groupCount())); ok {
					break
				}
				if time.Since(began) > churnReadWithin {
					st := s.GroupNode(g).Status()
					t.Errorf("new member %x (n%d) served no linearizable read of group %d within %v of starting (first index on group 0's leader %d); its status there: leader %s, applied %d, %d members, drops %v",
						id.RaftID, i+1, g, churnReadWithin, firstIndex(c), st.Leader, st.Applied, len(st.Members), st.Dropped)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("new member %x (n%d) served a linearizable read of every group %v after starting", id.RaftID, i+1, time.Since(began).Round(time.Millisecond))
	}
}}

// churnReadWithin bounds how long a new member may take to serve its first
// linearizable read.
const churnReadWithin = 5 * time.Second

// firstIndex is the first index of the log of whichever running node
// believes it leads (0 when none does); it does not wait for agreement, so
// that it can describe a member that is not caught up.
func firstIndex(c *linCluster) uint64 {
	for i := range c.size() {
		if s := c.server(i); s != nil && s.Node().IsLeader() {
			first, _ := s.Node().FirstIndex()
			return first
		}
	}
	return 0
}

// Node faults on a three-node cluster over one NATS server: a follower
// crashed and restarted from its data, the leader crashed, a node's link
// stalled (a process pause), every node crashed at once. Each fault is a
// phase with its own keys and its own checked history.
func TestLinearizabilityNodeFaults(t *testing.T) {
	c := newLinClusterProxied(t, linTune)
	runFaults(t, c, killRestart, leaderKill, pause, wholeCrash)
}

// NATS faults on a three-node cluster over a three-server NATS cluster: a
// NATS server killed and restarted, and the routes between two servers cut.
func TestLinearizabilityNATSFaults(t *testing.T) {
	c := newLinClusterOnNATSCluster(t, 1)
	runFaults(t, c, natsServerKill, routePartition)
}

// Membership churn under load: remove a follower, wipe it, re-add it under
// the same name as a new member on a cluster that has snapshotted and
// compacted; the new member must catch up and serve linearizable reads.
func TestLinearizabilityMembershipChurn(t *testing.T) {
	c := newLinClusterProxied(t, churnTune)
	c.leader()
	// Enough writes for a snapshot and a compaction before the first
	// removal.
	c.preload(t, int(churnTune.SnapshotEntries+churnTune.CompactionOverhead)+50)
	runFault(t, c, churn)
}

// preload writes count keys, 16 at a time, through every node.
func (c *linCluster) preload(t *testing.T, count int) {
	t.Helper()
	var via []*server.Server
	for i := range c.size() {
		if s := c.server(i); s != nil {
			via = append(via, s)
		}
	}
	began := time.Now()
	writeMany(t, via, "preload", count, smallValue)
	testnats.Eventually(t, 30*time.Second, func() error {
		if first := firstIndex(c); first <= 1 {
			return fmt.Errorf("the leader has not compacted its log yet (first index %d)", first)
		}
		return nil
	})
	t.Logf("preloaded %d keys in %v; the leader's log starts at %d", count, time.Since(began).Round(time.Millisecond), firstIndex(c))
}

// A negative control for the whole pipeline (HTTP client, recording,
// checker): serializable reads on a follower whose link is stalled return
// stale values while writes commit elsewhere, and the recorded history
// must be found not linearizable.
func TestLinearizabilityDetectsStaleReads(t *testing.T) {
	c := newLinClusterProxied(t, linTune)
	lead := c.leader()
	f := (lead + 1) % c.size()
	h := newHistory()
	client := h.newClient()
	key := "stale-0"
	if linPut(c.url(lead), key, "v0") != outcomeOK {
		t.Fatal("first put failed")
	}
	// The follower has applied v0 before it is stalled.
	testnats.Eventually(t, 10*time.Second, func() error {
		if out, ok := getKV(c.url(f) + "/kv/" + key + "?serializable=true"); !ok || out.value != "v0" {
			return fmt.Errorf("follower reads %+v", out)
		}
		return nil
	})
	c.proxies[f].Pause()
	defer c.proxies[f].Resume()
	for k := 1; k <= 5; k++ {
		in := kvInput{put: true, key: key, value: fmt.Sprintf("v%d", k)}
		call := h.now()
		oc := linPut(c.url(lead), key, in.value)
		h.record(client, in, kvOutput{}, call, h.now(), oc)
		call = h.now()
		out, ok := getKV(c.url(f) + "/kv/" + key + "?serializable=true")
		if ok {
			h.record(client, kvInput{key: key}, out, call, h.now(), outcomeOK)
		}
	}
	res, _ := porcupine.CheckOperationsVerbose(kvModel, h.operations(), 10*time.Second)
	if res != porcupine.Illegal {
		t.Fatalf("stale serializable reads checked as %s, want %s", res, porcupine.Illegal)
	}
}

// runFaults runs each fault as a subtest on c, one after the other, once c
// has a leader.
func runFaults(t *testing.T, c *linCluster, faults ...fault) {
	c.leader()
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			c.t = t
			runFault(t, c, f)
		})
	}
}

// manyGroups is the group count of the many-groups suites: enough that
// every host leads some groups and follows others.
const manyGroups = 8

// The node faults again, on three nodes that each run manyGroups groups:
// the workload's keys spread over every group, and each fault hits every
// group of the node at once (the leader killed is group 0's, which leads
// some other groups and follows the rest).
func TestLinearizabilityManyGroups(t *testing.T) {
	c := newLinClusterProxiedGroups(t, linTune, manyGroups)
	runFaults(t, c, killRestart, leaderKill, pause, wholeCrash)
}

// The NATS faults again, with manyGroups groups on every node: a NATS
// server killed under the nodes of every group, and routes cut.
func TestLinearizabilityManyGroupsNATSFaults(t *testing.T) {
	c := newLinClusterOnNATSCluster(t, manyGroups)
	runFaults(t, c, natsServerKill, routePartition)
}

// The seed scenario with many groups: a follower is removed from every
// group and wiped, then comes back under its name as a new member of every
// group, on a cluster whose groups snapshotted and compacted.
func TestLinearizabilityManyGroupsChurn(t *testing.T) {
	c := newLinClusterProxiedGroups(t, churnTune, manyGroups)
	c.leader()
	c.preload(t, manyGroups*(int(churnTune.SnapshotEntries+churnTune.CompactionOverhead)+50))
	runFault(t, c, churn)
}

// groupCount is the number of Raft groups of every node.
func (c *linCluster) groupCount() int { return max(c.groups, 1) }

// keyOfGroup is a key that kv.ShardOf places in group g of n.
func keyOfGroup(g, n int) string {
	for k := 0; ; k++ {
		key := fmt.Sprintf("churn-probe-%d", k)
		if kv.ShardOf(key, n) == g {
			return key
		}
	}
}

// changeGroupMembership runs change on group g's current leader, retrying
// while leadership moves, for up to 30 s.
func changeGroupMembership(t *testing.T, c *linCluster, g int, change func(context.Context, *node.Node) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var lead *node.Node
		for i := range c.size() {
			if s := c.server(i); s != nil && s.GroupNode(g).IsLeader() {
				lead = s.GroupNode(g)
			}
		}
		err := errors.New("no leader")
		if lead != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = change(ctx, lead)
			cancel()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("membership change in group %d: %v", g, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
