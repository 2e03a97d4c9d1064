package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

// srvCluster runs complete node processes (server.Server: Pebble storage,
// NATS bus, kv state machine, HTTP API) in this test process.
type srvCluster struct {
	t        *testing.T
	nats     []*natsserver.Server // node i uses nats[i%len(nats)]
	replicas int
	cluster  uuid.UUID
	dirs     []string
	idents   []*datadir.Identity
	servers  []*server.Server // nil while a node is down
	tune     node.Config
}

// newSrvCluster creates n data directories for a new cluster and starts
// every node.
func newSrvCluster(t *testing.T, n int, tune node.Config) *srvCluster {
	return newSrvClusterOn(t, []*natsserver.Server{testnats.Run(t, nil)}, n, tune)
}

// newSrvClusterOn is newSrvCluster on given NATS servers; with several, the
// membership stream gets three replicas.
func newSrvClusterOn(t *testing.T, servers []*natsserver.Server, n int, tune node.Config) *srvCluster {
	c := &srvCluster{t: t, nats: servers, cluster: uuid.New(), tune: tune, replicas: 1}
	if len(servers) >= 3 {
		c.replicas = 3
	}
	var boot []node.Member
	root := t.TempDir()
	for i := 1; i <= n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("n%d", i))
		id, err := datadir.Create(dir, datadir.Identity{ClusterID: c.cluster, RaftID: uint64(i), Name: fmt.Sprintf("n%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		c.dirs, c.idents = append(c.dirs, dir), append(c.idents, id)
		boot = append(boot, node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey})
	}
	c.servers = make([]*server.Server, n)
	for i := range c.dirs {
		c.start(i, boot)
	}
	return c
}

func (c *srvCluster) start(i int, boot []node.Member) *server.Server {
	c.t.Helper()
	s, err := c.tryStart(i, boot, datadir.Expect{})
	if err != nil {
		c.t.Fatalf("start n%d: %v", i+1, err)
	}
	return s
}

func (c *srvCluster) tryStart(i int, boot []node.Member, want datadir.Expect) (*server.Server, error) {
	tune := c.tune
	if tune.TickInterval == 0 {
		tune.TickInterval = 20 * time.Millisecond
	}
	s, err := server.Start(server.Config{
		DataDir: c.dirs[i], Expect: want, Conn: testnats.Connect(c.t, c.nats[i%len(c.nats)]), Bootstrap: boot,
		MembersReplicas: c.replicas,
		Node:            tune, Logger: testLogger(c.t).With("node", fmt.Sprintf("n%d", i+1)),
	})
	if err != nil {
		return nil, err
	}
	c.servers[i] = s
	c.t.Cleanup(s.Stop)
	return s, nil
}

func (c *srvCluster) up() []*server.Server {
	var out []*server.Server
	for _, s := range c.servers {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

func (c *srvCluster) waitLeader() *server.Server {
	c.t.Helper()
	var lead *server.Server
	testnats.Eventually(c.t, 15*time.Second, func() error {
		for _, s := range c.up() {
			l := s.Node().Leader()
			if l == 0 {
				return fmt.Errorf("%s has no leader", s.Identity().Name)
			}
			for _, o := range c.up() {
				if o.Identity().RaftID == l {
					lead = o
				}
			}
		}
		if lead == nil {
			return fmt.Errorf("leader is not running")
		}
		return nil
	})
	return lead
}

// waitSame waits until every running node's store has the same digest and
// holds at least want keys.
func (c *srvCluster) waitSame(want int) {
	c.t.Helper()
	testnats.Eventually(c.t, 60*time.Second, func() error {
		ups := c.up()
		ref := ups[0].KV()
		if ref.Len() < want {
			return fmt.Errorf("%s holds %d keys, want %d", ups[0].Identity().Name, ref.Len(), want)
		}
		for _, s := range ups[1:] {
			if s.KV().Digest() != ref.Digest() {
				return fmt.Errorf("%s and %s differ (%d vs %d keys)", s.Identity().Name, ups[0].Identity().Name, s.KV().Len(), ref.Len())
			}
		}
		return nil
	})
}

// httpClient is shared so connections are reused across the many writes.
var httpClient = &http.Client{Timeout: 10 * time.Second}

type putReply struct {
	Index uint64 `json:"index"`
	Error string `json:"error"`
	Code  string `json:"code"`
}

// put writes key=value through a node's HTTP API.
func put(base, key string, value []byte) (uint64, int, error) {
	req, err := http.NewRequest(http.MethodPut, base+"/kv/"+key, bytes.NewReader(value))
	if err != nil {
		return 0, 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var r putReply
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, resp.StatusCode, fmt.Errorf("PUT %s: status %d, body %q", key, resp.StatusCode, body)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, fmt.Errorf("PUT %s: %d %s (%s)", key, resp.StatusCode, r.Code, r.Error)
	}
	return r.Index, resp.StatusCode, nil
}

// writeMany puts count keys prefix-k through the given nodes in turn, 16 at
// a time, retrying retryable failures, and returns the index of each key.
func writeMany(t *testing.T, via []*server.Server, prefix string, count int, value func(k int) []byte) map[string]uint64 {
	t.Helper()
	var mu sync.Mutex
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errc := make(chan error, 1)
	for k := 0; k < count; k++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer func() { <-sem }()
			key := fmt.Sprintf("%s-%05d", prefix, k)
			base := via[k%len(via)].URL()
			deadline := time.Now().Add(30 * time.Second)
			for {
				idx, _, err := put(base, key, value(k))
				if err == nil {
					mu.Lock()
					acked[key] = idx
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					select {
					case errc <- err:
					default:
					}
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}(k)
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	return acked
}

func smallValue(k int) []byte { return []byte(fmt.Sprintf("value-%d", k)) }

// Reference node test 1: 2,000 writes through different nodes of a durable
// three-node cluster; every node's store ends identical.
func TestDurableClusterWrites(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	acked := writeMany(t, c.up(), "k", 2000, smallValue)
	c.waitSame(2000)
	for _, s := range c.up() {
		for key, idx := range acked {
			v, ok := s.KV().Get(key)
			if !ok || v.ModIndex != idx || v.CreateIndex != idx {
				t.Fatalf("%s: key %s = %+v (found %v), acknowledged at index %d", s.Identity().Name, key, v, ok, idx)
			}
		}
	}
}
