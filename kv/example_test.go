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
