package kv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/raftbus/raftbus/kv"
)

func ExampleStore() {
	s := kv.NewStore()
	// The node applies committed entries in log order.
	s.Apply(1, kv.EncodePut("user/alice", []byte("admin")))
	s.Apply(2, kv.EncodePut("user/bob", []byte("dev")))
	s.Apply(3, kv.EncodePut("user/alice", []byte("owner")))
	res, _ := s.Apply(4, kv.EncodeDelete("user/bob"))
	fmt.Printf("delete removed a key: %v\n", res.(kv.Result).Existed)

	v, _ := s.Get("user/alice")
	fmt.Printf("%s created at %d, modified at %d\n", v.Data, v.CreateIndex, v.ModIndex)

	// A snapshot restores into an identical replica.
	data, _ := s.Snapshot()
	replica := kv.NewStore()
	if err := replica.Restore(data); err != nil {
		panic(err)
	}
	fmt.Println("replica matches:", replica.Digest() == s.Digest(), replica.AppliedIndex())
	// Output:
	// delete removed a key: true
	// owner created at 1, modified at 3
	// replica matches: true 4
}

// localCluster stands in for the node runtime: it applies each proposal at
// once, as a single-node cluster would after committing it.
type localCluster struct {
	mu    sync.Mutex
	store *kv.Store
	index uint64
}

func (c *localCluster) Propose(_ context.Context, data []byte) (uint64, any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index++
	res, err := c.store.Apply(c.index, data)
	return c.index, res, err
}

func (c *localCluster) ReadIndex(context.Context) error { return nil }

func ExampleNewHandler() {
	store := kv.NewStore()
	h, err := kv.NewHandler(kv.HandlerConfig{Store: store, Cluster: &localCluster{store: store}})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	show := func(method, path, body string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Print(resp.StatusCode, " ", string(b))
	}
	show("PUT", "/kv/greeting", "hello")
	show("GET", "/kv/greeting", "")
	show("GET", "/kv?prefix=greet", "")
	show("DELETE", "/kv/greeting", "")
	show("GET", "/kv/greeting", "")
	show("POST", "/kv/greeting", "")
	// Output:
	// 200 {"key":"greeting","index":1,"created":true}
	// 200 {"key":"greeting","value":"hello","create_index":1,"mod_index":1}
	// 200 {"kvs":[{"key":"greeting","value":"hello","create_index":1,"mod_index":1}],"count":1,"more":false}
	// 200 {"key":"greeting","index":2,"deleted":true}
	// 404 {"error":"key \"greeting\" not found","code":"not_found"}
	// 405 {"error":"method POST not allowed; allowed: GET, HEAD, PUT, DELETE","code":"method_not_allowed"}
}

func ExampleShardOf() {
	// Key placement is fixed by the hash and the shard count.
	for _, key := range []string{"greeting", "user/alice", "user/bob"} {
		fmt.Println(key, "is in shard", kv.ShardOf(key, 8), "of 8")
	}
	// Output:
	// greeting is in shard 6 of 8
	// user/alice is in shard 1 of 8
	// user/bob is in shard 6 of 8
}

func ExampleNewHandler_shards() {
	// One Store and one Cluster per Raft group; in a node these are the
	// groups' state machines and local nodes.
	shards := make([]kv.Shard, 8)
	for i := range shards {
		store := kv.NewStore()
		shards[i] = kv.Shard{Store: store, Cluster: &localCluster{store: store}}
	}
	h, err := kv.NewHandler(kv.HandlerConfig{Shards: shards})
	if err != nil {
		panic(err)
	}
	for _, key := range []string{"user/bob", "user/alice", "greeting"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("PUT", "/kv/"+key, strings.NewReader("v")))
	}
	fmt.Println("keys in shard 6:", shards[6].Store.Len())
	// A listing merges the shards in key order.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/kv?prefix=user/&limit=1", nil))
	fmt.Print(rec.Body)
	// Output:
	// keys in shard 6: 2
	// {"kvs":[{"key":"user/alice","value":"v","create_index":1,"mod_index":1}],"count":1,"more":true,"next":"user/bob"}
}
