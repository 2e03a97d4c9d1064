package kv

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftbus/raftbus/node"
)

// TestShardOfGolden pins the placement: it is part of every cluster's
// contract, so an accidental change of the hash must not pass unnoticed.
func TestShardOfGolden(t *testing.T) {
	golden := []struct {
		key            string
		n8, n64, n4096 int
	}{
		{"a", 4, 12, 3212},
		{"greeting", 6, 54, 2806},
		{"user/alice", 1, 33, 1057},
		{"user/bob", 6, 54, 246},
		{"ключ", 1, 1, 2689},
		{"\xff\x00", 2, 42, 3050},
		{"k", 2, 10, 3466},
	}
	for _, g := range golden {
		for _, c := range []struct{ n, want int }{{8, g.n8}, {64, g.n64}, {4096, g.n4096}} {
			if got := ShardOf(g.key, c.n); got != c.want {
				t.Errorf("ShardOf(%q, %d) = %d, want %d", g.key, c.n, got, c.want)
			}
		}
	}
	// And it is FNV-1a 64, as documented.
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		key := randomKey(r)
		n := 1 + r.IntN(MaxShards)
		h := fnv.New64a()
		h.Write([]byte(key))
		if got, want := ShardOf(key, n), int(h.Sum64()%uint64(n)); got != want {
			t.Fatalf("ShardOf(%q, %d) = %d, FNV-1a 64 says %d", key, n, got, want)
		}
	}
	for _, n := range []int{-5, 0, 1} {
		if got := ShardOf("a", n); got != 0 {
			t.Errorf("ShardOf(a, %d) = %d, want 0", n, got)
		}
	}
}

func TestShardOfDistribution(t *testing.T) {
	const keys, shards = 10000, 64
	var count [shards]int
	for i := range keys {
		s := ShardOf(fmt.Sprintf("user/%d", i), shards)
		if s < 0 || s >= shards {
			t.Fatalf("shard %d out of range", s)
		}
		count[s]++
	}
	// 156 keys expected per shard; a fair hash stays well within half and
	// double of that.
	for s, c := range count {
		if c < keys/shards/2 || c > 2*keys/shards {
			t.Errorf("shard %d holds %d of %d keys", s, c, keys)
		}
	}
}

// randomKey returns a valid key from a small alphabet, so that keys share
// prefixes and listings by prefix have something to find.
func randomKey(r *rand.Rand) string {
	const alphabet = "ab/cé"
	runes := []rune(alphabet)
	var b strings.Builder
	for range 1 + r.IntN(6) {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

// shardedCluster is n shards, each an applyCluster over its own Store.
type shardedCluster struct {
	clusters []*applyCluster
	shards   []Shard
}

func newSharded(n int) *shardedCluster {
	sc := &shardedCluster{}
	for range n {
		c := &applyCluster{store: NewStore()}
		sc.clusters = append(sc.clusters, c)
		sc.shards = append(sc.shards, Shard{Store: c.store, Cluster: c})
	}
	return sc
}

func newShardedHandler(t *testing.T, shards []Shard, cfg HandlerConfig) http.Handler {
	t.Helper()
	cfg.Shards = shards
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

// TestHTTPOneShardFormRunsAllTests runs the handler tests again with every
// handler built from Shards: one shard must behave exactly like the
// Store+Cluster form.
func TestHTTPOneShardFormRunsAllTests(t *testing.T) {
	tests := map[string]func(*testing.T){
		"PutGetDelete":                TestHTTPPutGetDelete,
		"KeysFromPath":                TestHTTPKeysFromPath,
		"BadKeys":                     TestHTTPBadKeys,
		"ValueTooLarge":               TestHTTPValueTooLarge,
		"MethodNotAllowed":            TestHTTPMethodNotAllowed,
		"UnknownEndpoint":             TestHTTPUnknownEndpoint,
		"ClusterErrors":               TestHTTPClusterErrors,
		"Timeout":                     TestHTTPTimeout,
		"UnexpectedResult":            TestHTTPUnexpectedResult,
		"LinearizableAndSerializable": TestHTTPLinearizableAndSerializableReads,
		"ValueEncoding":               TestHTTPValueEncoding,
		"List":                        TestHTTPList,
		"StatusAndMetrics":            TestHTTPStatusAndMetrics,
		"Head":                        TestHTTPHead,
		"ConcurrentClients":           TestHTTPConcurrentClients,
		"AuthGuardsAllButProbes":      TestAuthGuardsAllButProbes,
	}
	shardForm = true
	defer func() { shardForm = false }()
	for name, test := range tests {
		t.Run(name, test)
	}
}

// TestHTTPOneShardEqualsStoreAndCluster sends the same requests to a
// Store+Cluster handler and to a one-shard handler and compares the
// answers byte for byte.
func TestHTTPOneShardEqualsStoreAndCluster(t *testing.T) {
	requests := []struct{ method, target, body string }{
		{"PUT", "/kv/a", "1"},
		{"PUT", "/kv/b/1", "2"},
		{"PUT", "/kv/b/2", "\xff"},
		{"PUT", "/kv/b/3", "4"},
		{"PUT", "/kv/a", "5"},
		{"PUT", "/kv/" + strings.Repeat("x", 20), "v"},
		{"PUT", "/kv/big", strings.Repeat("v", 17)},
		{"PUT", "/kv/a//b", "v"},
		{"GET", "/kv/a", ""},
		{"GET", "/kv/a?serializable=true", ""},
		{"GET", "/kv/b/2?encoding=base64", ""},
		{"GET", "/kv/b/2", ""},
		{"GET", "/kv/missing", ""},
		{"GET", "/kv/a?serializable=maybe", ""},
		{"HEAD", "/kv/a", ""},
		{"GET", "/kv", ""},
		{"GET", "/kv?limit=2", ""},
		{"GET", "/kv?prefix=b/&limit=1", ""},
		{"GET", "/kv?prefix=b/&start=b/2&limit=1", ""},
		{"GET", "/kv?start=a&end=b/3", ""},
		{"GET", "/kv?start=c&end=a", ""},
		{"GET", "/kv?limit=0", ""},
		{"GET", "/kv?prefix=b&end=c", ""},
		{"GET", "/kv?serializable=true&encoding=base64", ""},
		{"DELETE", "/kv/a", ""},
		{"DELETE", "/kv/a", ""},
		{"POST", "/kv/a", ""},
		{"DELETE", "/kv", ""},
		{"GET", "/nope", ""},
	}
	type answer struct {
		status                    int
		ctype, retry, allow, body string
	}
	run := func(h http.Handler) []answer {
		var out []answer
		for _, rq := range requests {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(rq.method, rq.target, strings.NewReader(rq.body)))
			out = append(out, answer{rec.Code, rec.Header().Get("Content-Type"),
				rec.Header().Get("Retry-After"), rec.Header().Get("Allow"), rec.Body.String()})
		}
		return out
	}
	clusters := map[string]func(*Store) Cluster{
		"apply":     func(s *Store) Cluster { return &applyCluster{store: s} },
		"no_leader": func(*Store) Cluster { return errCluster{node.ErrNoLeader} },
		"internal":  func(*Store) Cluster { return errCluster{fmt.Errorf("disk on fire")} },
		"stuck":     func(*Store) Cluster { return stuckCluster{} },
		"result":    func(*Store) Cluster { return resultCluster{} },
	}
	for name, newCluster := range clusters {
		t.Run(name, func(t *testing.T) {
			cfg := HandlerConfig{MaxKeyBytes: 16, MaxValueBytes: 16, RequestTimeout: 10 * time.Millisecond}
			seed := func(s *Store) *Store {
				mustApply(t, s, 1, EncodePut("seed", []byte("s")))
				return s
			}
			old := cfg
			old.Store = seed(NewStore())
			old.Cluster = newCluster(old.Store)
			hOld, err := NewHandler(old)
			if err != nil {
				t.Fatal(err)
			}
			s := seed(NewStore())
			hNew := newShardedHandler(t, []Shard{{Store: s, Cluster: newCluster(s)}}, cfg)
			want, got := run(hOld), run(hNew)
			for i := range requests {
				if got[i] != want[i] {
					t.Errorf("%s %s:\none shard %+v\nStore    %+v", requests[i].method, requests[i].target, got[i], want[i])
				}
			}
		})
	}
}

// TestHTTPShardRouting checks that each key's requests reach its shard's
// Store and Cluster and no other.
func TestHTTPShardRouting(t *testing.T) {
	const n = 8
	sc := newSharded(n)
	h := newShardedHandler(t, sc.shards, HandlerConfig{})
	r := rand.New(rand.NewPCG(3, 4))
	used := map[int]bool{}
	for i := range 200 {
		key := fmt.Sprintf("k/%d/%s", i, randomKey(r))
		want := ShardOf(key, n)
		used[want] = true
		before := make([][2]int64, n)
		for s, c := range sc.clusters {
			before[s] = [2]int64{c.proposals.Load(), c.reads.Load()}
		}
		path := "/kv/" + url.PathEscape(key)
		do(t, h, "PUT", path, strings.NewReader("v"+key)).expect(t, 200, map[string]any{"key": key, "created": true})
		do(t, h, "GET", path, nil).expect(t, 200, map[string]any{"value": "v" + key})
		for s, c := range sc.clusters {
			_, found := c.store.Get(key)
			if found != (s == want) {
				t.Fatalf("key %q (shard %d) found=%v in shard %d", key, want, found, s)
			}
			dp, dr := c.proposals.Load()-before[s][0], c.reads.Load()-before[s][1]
			if s == want && (dp != 1 || dr != 1) || s != want && (dp != 0 || dr != 0) {
				t.Fatalf("key %q (shard %d): shard %d saw %d proposals, %d reads", key, want, s, dp, dr)
			}
		}
		// A serializable GET reads the shard's own Store: a value written
		// behind the handler's back shows it.
		st := sc.clusters[want].store
		if _, _, err := sc.clusters[want].Propose(context.Background(), EncodePut(key, []byte("direct"))); err != nil {
			t.Fatal(err)
		}
		do(t, h, "GET", path+"?serializable=true", nil).expect(t, 200, map[string]any{"value": "direct"})
		if i%2 == 0 {
			do(t, h, "DELETE", path, nil).expect(t, 200, map[string]any{"deleted": true})
			if _, found := st.Get(key); found {
				t.Fatalf("DELETE %q left it in shard %d", key, want)
			}
		}
	}
	if len(used) != n {
		t.Fatalf("200 keys used only %d of %d shards", len(used), n)
	}
	total := 0
	for _, c := range sc.clusters {
		total += c.store.Len()
	}
	if total != 100 {
		t.Fatalf("%d keys in all shards, want 100", total)
	}
}

// page is one listing page, without the create and mod indexes, which are
// per group and so differ between a sharded and an unsharded key space.
type page struct {
	keys, values []string
	more         bool
	next         any
}

func getPage(t *testing.T, h http.Handler, target string) page {
	t.Helper()
	r := do(t, h, "GET", target, nil)
	r.expect(t, 200, nil)
	p := page{keys: listKeys(t, r), more: r.body["more"].(bool), next: r.body["next"]}
	for _, kv := range r.body["kvs"].([]any) {
		p.values = append(p.values, kv.(map[string]any)["value"].(string))
	}
	return p
}

// TestHTTPShardedListingEqualsOneStore pages through listings of 8 shards
// and of one Store holding the same keys, and expects the same pages.
func TestHTTPShardedListingEqualsOneStore(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	keySets := map[string][]string{}
	var random, skewed []string
	for range 300 {
		random = append(random, randomKey(r))
	}
	// Keys of one shard only exhaust that shard's first read, so the merge
	// has to read it again.
	for i := 0; len(skewed) < 150 && i < 10000; i++ {
		if k := fmt.Sprintf("b/%d", i); ShardOf(k, 8) == 5 {
			skewed = append(skewed, k)
		}
	}
	if len(skewed) < 150 {
		t.Fatalf("only %d of 10000 keys in shard 5 of 8", len(skewed))
	}
	keySets["random"], keySets["skewed"] = random, skewed
	keySets["mixed"] = append(append([]string{}, random[:100]...), skewed[:100]...)
	keySets["empty"] = nil

	for name, keys := range keySets {
		t.Run(name, func(t *testing.T) {
			sc := newSharded(8)
			sharded := newShardedHandler(t, sc.shards, HandlerConfig{})
			one := newTestHandler(t, HandlerConfig{})
			for _, k := range keys {
				for _, h := range []http.Handler{sharded, one} {
					do(t, h, "PUT", "/kv/"+url.PathEscape(k), strings.NewReader("v-"+k)).expect(t, 200, nil)
				}
			}
			queries := []string{"", "prefix=a", "prefix=b/", "prefix=é", "prefix=zz",
				"start=b", "start=a&end=c", "end=b/5", "start=c&end=a", "prefix=b/&start=b/1",
				"serializable=true"}
			for _, q := range queries {
				for _, limit := range []int{1, 2, 3, 7, 10, 64, 1000} {
					params, err := url.ParseQuery(q)
					if err != nil {
						t.Fatal(err)
					}
					params.Set("limit", fmt.Sprint(limit))
					var all []string
					for pages := 0; ; pages++ {
						target := "/kv?" + params.Encode()
						got, want := getPage(t, sharded, target), getPage(t, one, target)
						if !reflect.DeepEqual(got, want) {
							t.Fatalf("GET %s:\n8 shards %+v\n1 store  %+v", target, got, want)
						}
						all = append(all, got.keys...)
						if !got.more {
							break
						}
						if pages > len(keys) {
							t.Fatalf("GET %s: paging does not end", target)
						}
						params.Set("start", got.next.(string))
					}
					if len(keys) > 0 && q == "" && len(all) != len(unique(keys)) {
						t.Fatalf("paging with limit %d listed %d keys, want %d", limit, len(all), len(unique(keys)))
					}
				}
			}
		})
	}
}

func unique(keys []string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// TestMergeEqualsRange compares merge with Range over one Store holding
// every key, for random ranges and limits.
func TestMergeEqualsRange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 8, 64} {
		sc := newSharded(n)
		all := NewStore()
		for i := range 500 {
			k := randomKey(r)
			if i%3 == 0 {
				k = fmt.Sprintf("n/%04d", i)
			}
			idx := all.AppliedIndex() + 1
			mustApply(t, all, idx, EncodePut(k, []byte(k)))
			s := sc.clusters[ShardOf(k, n)].store
			mustApply(t, s, s.AppliedIndex()+1, EncodePut(k, []byte(k)))
		}
		h := newShardedHandler(t, sc.shards, HandlerConfig{}).(*handler)
		for range 300 {
			start, end := randomKey(r), randomKey(r)
			switch r.IntN(3) {
			case 0:
				start = ""
			case 1:
				end = ""
			}
			limit := 1 + r.IntN(600)
			want := all.Range(start, end, limit)
			got := h.merge(start, end, limit)
			if len(got) != len(want) {
				t.Fatalf("n=%d [%q, %q) limit %d: %d keys, want %d", n, start, end, limit, len(got), len(want))
			}
			for i := range got {
				if got[i].key != want[i].Key || string(got[i].value) != string(want[i].Data) {
					t.Fatalf("n=%d [%q, %q) limit %d: key %d is %q, want %q", n, start, end, limit, i, got[i].key, want[i].Key)
				}
			}
		}
	}
}

// TestHTTPFailingShard checks that a shard whose Cluster fails fails only
// the requests for its keys, and every linearizable listing.
func TestHTTPFailingShard(t *testing.T) {
	const n, bad = 8, 3
	for _, tc := range []struct {
		name    string
		cluster Cluster
		status  int
		code    string
		retry   string
	}{
		{"no_leader", errCluster{node.ErrNoLeader}, 503, "no_leader", "1"},
		{"stopped", errCluster{fmt.Errorf("shard gone: %w", node.ErrStopped)}, 503, "stopped", ""},
		{"timeout", stuckCluster{}, 504, "timeout", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := newSharded(n)
			sc.shards[bad].Cluster = tc.cluster
			h := newShardedHandler(t, sc.shards, HandlerConfig{RequestTimeout: 10 * time.Millisecond})
			badKeys, goodKeys := 0, 0
			for i := range 100 {
				key := fmt.Sprintf("key%d", i)
				path := "/kv/" + key
				if ShardOf(key, n) != bad {
					goodKeys++
					do(t, h, "PUT", path, strings.NewReader("v")).expect(t, 200, nil)
					do(t, h, "GET", path, nil).expect(t, 200, map[string]any{"value": "v"})
					continue
				}
				badKeys++
				mustApply(t, sc.clusters[bad].store, uint64(badKeys), EncodePut(key, []byte("v")))
				for _, m := range []string{"PUT", "GET", "DELETE"} {
					r := do(t, h, m, path, strings.NewReader("v"))
					r.expect(t, tc.status, map[string]any{"code": tc.code})
					if got := r.header.Get("Retry-After"); got != tc.retry {
						t.Fatalf("%s %s: Retry-After %q, want %q", m, path, got, tc.retry)
					}
				}
				// Serializable reads need no cluster.
				do(t, h, "GET", path+"?serializable=true", nil).expect(t, 200, map[string]any{"value": "v"})
			}
			if badKeys == 0 || goodKeys == 0 {
				t.Fatalf("%d keys in the failing shard, %d in the others", badKeys, goodKeys)
			}
			// No partial listing, whatever the range.
			for _, q := range []string{"", "?prefix=key1", "?start=a&end=b", "?start=c&end=a"} {
				r := do(t, h, "GET", "/kv"+q, nil)
				r.expect(t, tc.status, map[string]any{"code": tc.code, "kvs": nil})
				if got := r.header.Get("Retry-After"); got != tc.retry {
					t.Fatalf("GET /kv%s: Retry-After %q, want %q", q, got, tc.retry)
				}
			}
			do(t, h, "GET", "/kv?serializable=true&limit=1000", nil).
				expect(t, 200, map[string]any{"count": float64(badKeys + goodKeys)})
		})
	}
}

// barrierCluster is a Cluster whose ReadIndex records why its context
// ended, or waits for a rendezvous of all shards.
type barrierCluster struct {
	applyCluster
	wait   func(ctx context.Context) error
	ctxErr chan error
}

func (c *barrierCluster) ReadIndex(ctx context.Context) error {
	err := c.wait(ctx)
	if c.ctxErr != nil {
		c.ctxErr <- ctx.Err()
	}
	return err
}

// TestHTTPListingBarriersRunInParallel fails (with 504) if the shards'
// barriers run one after the other: each returns only once all of them
// have been entered.
func TestHTTPListingBarriersRunInParallel(t *testing.T) {
	const n = 8
	var entered sync.WaitGroup
	entered.Add(n)
	all := make(chan struct{})
	go func() { entered.Wait(); close(all) }()
	var shards []Shard
	for range n {
		c := &barrierCluster{applyCluster: applyCluster{store: NewStore()}}
		c.wait = func(ctx context.Context) error {
			entered.Done()
			select {
			case <-all:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		shards = append(shards, Shard{Store: c.store, Cluster: c})
	}
	h := newShardedHandler(t, shards, HandlerConfig{RequestTimeout: 10 * time.Second})
	do(t, h, "GET", "/kv", nil).expect(t, 200, map[string]any{"count": 0.0})
}

// TestHTTPListingFailsFast checks that the first failing barrier cancels
// the others instead of letting them run to the request timeout.
func TestHTTPListingFailsFast(t *testing.T) {
	const n = 8
	var shards []Shard
	canceled := make(chan error, n)
	for i := range n {
		c := &barrierCluster{applyCluster: applyCluster{store: NewStore()}}
		if i == 5 {
			c.wait = func(context.Context) error { return node.ErrNoLeader }
		} else {
			c.wait = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
			c.ctxErr = canceled
		}
		shards = append(shards, Shard{Store: c.store, Cluster: c})
	}
	// Without the cancellation the stuck barriers would end at the
	// timeout, with context.DeadlineExceeded.
	h := newShardedHandler(t, shards, HandlerConfig{RequestTimeout: 20 * time.Second})
	do(t, h, "GET", "/kv", nil).expect(t, 503, map[string]any{"code": "no_leader"})
	for range n - 1 {
		if err := <-canceled; err != context.Canceled {
			t.Fatalf("a stuck barrier ended with %v, want context.Canceled", err)
		}
	}
}

func TestNewHandlerValidatesShards(t *testing.T) {
	sc := newSharded(3)
	s, c := NewStore(), &applyCluster{}
	tooMany := make([]Shard, MaxShards+1)
	for i := range tooMany {
		st := NewStore()
		tooMany[i] = Shard{Store: st, Cluster: &applyCluster{store: st}}
	}
	bad := []struct {
		cfg  HandlerConfig
		want string
	}{
		{HandlerConfig{}, "needs Store and Cluster, or Shards"},
		{HandlerConfig{Shards: sc.shards, Store: s}, "excludes Store and Cluster"},
		{HandlerConfig{Shards: sc.shards, Cluster: c}, "excludes Store and Cluster"},
		{HandlerConfig{Shards: sc.shards, Store: s, Cluster: c}, "excludes Store and Cluster"},
		{HandlerConfig{Shards: []Shard{}}, "Shards is empty"},
		{HandlerConfig{Shards: []Shard{sc.shards[0], {Cluster: c}}}, "Shards[1].Store is nil"},
		{HandlerConfig{Shards: []Shard{{Store: s}}}, "Shards[0].Cluster is nil"},
		{HandlerConfig{Shards: []Shard{sc.shards[0], sc.shards[1], sc.shards[0]}}, "Shards[0] and Shards[2] have the same Store"},
		{HandlerConfig{Shards: tooMany}, fmt.Sprintf("has %d shards, the maximum is %d", MaxShards+1, MaxShards)},
		{HandlerConfig{Shards: sc.shards, ListLimit: -1}, "must not be negative"},
	}
	for _, tc := range bad {
		_, err := NewHandler(tc.cfg)
		if err == nil {
			t.Errorf("accepted %+v", tc.cfg)
			continue
		}
		if !strings.HasPrefix(err.Error(), "kv: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q, want \"kv: ...%s...\"", err, tc.want)
		}
	}
	if _, err := NewHandler(HandlerConfig{Shards: tooMany[:MaxShards]}); err != nil {
		t.Fatalf("MaxShards shards: %v", err)
	}
}

// TestHandlerCopiesShards checks that the caller's slice does not reroute
// keys after NewHandler.
func TestHandlerCopiesShards(t *testing.T) {
	sc := newSharded(2)
	shards := append([]Shard{}, sc.shards...)
	h := newShardedHandler(t, shards, HandlerConfig{})
	shards[0], shards[1] = shards[1], shards[0]
	key := "a" // shard 0 of 2
	if ShardOf(key, 2) != 0 {
		t.Fatalf("ShardOf(%q, 2) = %d", key, ShardOf(key, 2))
	}
	do(t, h, "PUT", "/kv/"+key, strings.NewReader("v")).expect(t, 200, nil)
	if _, ok := sc.clusters[0].store.Get(key); !ok {
		t.Fatal("the handler followed a change of the caller's Shards")
	}
}
