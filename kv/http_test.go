package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftbus/raftbus/node"
)

// applyCluster is a one-node cluster without Raft: Propose applies the
// command to the Store at the next index right away.
type applyCluster struct {
	store     *Store
	mu        sync.Mutex // serialises Apply like the node's apply goroutine
	next      uint64
	proposals atomic.Int64
	reads     atomic.Int64
}

func (c *applyCluster) Propose(_ context.Context, data []byte) (uint64, any, error) {
	c.proposals.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	res, err := c.store.Apply(c.next, data)
	return c.next, res, err
}

func (c *applyCluster) ReadIndex(context.Context) error {
	c.reads.Add(1)
	return nil
}

// errCluster fails every call with err.
type errCluster struct{ err error }

func (c errCluster) Propose(context.Context, []byte) (uint64, any, error) { return 0, nil, c.err }
func (c errCluster) ReadIndex(context.Context) error                      { return c.err }

// stuckCluster never completes: it returns when the request context ends.
type stuckCluster struct{}

func (stuckCluster) Propose(ctx context.Context, _ []byte) (uint64, any, error) {
	<-ctx.Done()
	return 0, nil, fmt.Errorf("waiting for commit: %w", ctx.Err())
}

func (stuckCluster) ReadIndex(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// resultCluster applies nothing and returns a result of the wrong type.
type resultCluster struct{}

func (resultCluster) Propose(context.Context, []byte) (uint64, any, error) { return 4, "weird", nil }
func (resultCluster) ReadIndex(context.Context) error                      { return nil }

// shardForm, when set, makes newTestHandler pass its Store and Cluster as
// one Shard instead, so that the tests of this file also check that a
// one-shard handler behaves like the Store+Cluster one (see
// TestHTTPOneShardFormRunsAllTests).
var shardForm bool

func newTestHandler(t *testing.T, cfg HandlerConfig) http.Handler {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = NewStore()
	}
	if cfg.Cluster == nil {
		cfg.Cluster = &applyCluster{store: cfg.Store}
	}
	if shardForm {
		cfg.Shards = []Shard{{Store: cfg.Store, Cluster: cfg.Cluster}}
		cfg.Store, cfg.Cluster = nil, nil
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, h http.Handler, method, target string, body io.Reader) response {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	// Everything is JSON except the metrics handler's own output.
	if method != http.MethodHead && (target != "/metrics" || rec.Code != http.StatusOK) {
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: Content-Type %q, body %q", method, target, ct, resp.raw)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp.body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, target, resp.raw, err)
		}
	}
	return resp
}

// expect checks the status and the given top-level fields of the body.
func (r response) expect(t *testing.T, status int, fields map[string]any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	for k, want := range fields {
		got, ok := r.body[k]
		if want == nil {
			if ok {
				t.Fatalf("field %q = %v, want it absent; body %s", k, got, r.raw)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("field %q = %#v, want %#v; body %s", k, got, want, r.raw)
		}
	}
}

func TestHTTPPutGetDelete(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{})
	do(t, h, "PUT", "/kv/greeting", strings.NewReader("hello")).
		expect(t, 200, map[string]any{"key": "greeting", "index": 1.0, "created": true})
	do(t, h, "GET", "/kv/greeting", nil).
		expect(t, 200, map[string]any{"key": "greeting", "value": "hello", "value_base64": nil, "create_index": 1.0, "mod_index": 1.0})
	do(t, h, "PUT", "/kv/greeting", strings.NewReader("hi")).
		expect(t, 200, map[string]any{"index": 2.0, "created": false})
	do(t, h, "GET", "/kv/greeting", nil).
		expect(t, 200, map[string]any{"value": "hi", "create_index": 1.0, "mod_index": 2.0})
	do(t, h, "DELETE", "/kv/greeting", nil).
		expect(t, 200, map[string]any{"key": "greeting", "index": 3.0, "deleted": true})
	do(t, h, "GET", "/kv/greeting", nil).
		expect(t, 404, map[string]any{"code": "not_found"})
	do(t, h, "DELETE", "/kv/greeting", nil).
		expect(t, 200, map[string]any{"index": 4.0, "deleted": false})
	// An empty body is an empty value, not a missing one.
	do(t, h, "PUT", "/kv/empty", nil).expect(t, 200, nil)
	do(t, h, "GET", "/kv/empty", nil).expect(t, 200, map[string]any{"value": ""})
}

func TestHTTPKeysFromPath(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{})
	do(t, h, "PUT", "/kv/a/b", strings.NewReader("1")).expect(t, 200, map[string]any{"key": "a/b"})
	do(t, h, "GET", "/kv/a%2Fb", nil).expect(t, 200, map[string]any{"key": "a/b", "value": "1"})
	do(t, h, "PUT", "/kv/%D0%BA%D0%BB%D1%8E%D1%87%20x", strings.NewReader("2")).expect(t, 200, map[string]any{"key": "ключ x"})
	do(t, h, "PUT", "/kv/dir/", strings.NewReader("3")).expect(t, 200, map[string]any{"key": "dir/"})
	do(t, h, "PUT", "/kv/%2E%2E/x", strings.NewReader("4")).expect(t, 200, map[string]any{"key": "../x"})
}

func TestHTTPBadKeys(t *testing.T) {
	c := &applyCluster{store: NewStore()}
	h := newTestHandler(t, HandlerConfig{Store: c.store, Cluster: c, MaxKeyBytes: 8})
	for _, path := range []string{
		"/kv/",                               // empty
		"/kv/123456789",                      // longer than MaxKeyBytes
		"/kv/%FF",                            // not UTF-8
		"/kv/a%00b",                          // NUL
		"/kv/a%0Ab",                          // newline
		"/kv/%7F",                            // DEL
		"/kv/%C2%85",                         // U+0085, a C1 control
		"/kv/a//b",                           // empty segment: ServeMux would redirect
		"/kv/a/./b",                          // "." segment
		"/kv/a/../b",                         // ".." segment
		"/kv/..",                             // ".." segment
		"/kv/a/.",                            // "." at the end
		"/kv/%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9", // 10 bytes, 5 runes: bytes count
	} {
		for _, method := range []string{"PUT", "GET", "DELETE"} {
			do(t, h, method, path, strings.NewReader("v")).expect(t, 400, map[string]any{"code": "bad_key"})
		}
	}
	if n := c.proposals.Load() + c.reads.Load(); n != 0 {
		t.Fatalf("bad keys reached the cluster %d times", n)
	}
	do(t, h, "PUT", "/kv/12345678", strings.NewReader("v")).expect(t, 200, nil) // exactly the limit
}

// unsizedReader hides the length of a body, as chunked encoding does.
type unsizedReader struct{ io.Reader }

func TestHTTPValueTooLarge(t *testing.T) {
	c := &applyCluster{store: NewStore()}
	h := newTestHandler(t, HandlerConfig{Store: c.store, Cluster: c, MaxValueBytes: 16})
	big := strings.Repeat("x", 17)
	do(t, h, "PUT", "/kv/k", strings.NewReader(big)).expect(t, 413, map[string]any{"code": "too_large"})
	do(t, h, "PUT", "/kv/k", unsizedReader{strings.NewReader(big)}).expect(t, 413, map[string]any{"code": "too_large"})
	if n := c.proposals.Load(); n != 0 {
		t.Fatalf("oversized values were proposed %d times", n)
	}
	do(t, h, "PUT", "/kv/k", unsizedReader{strings.NewReader(big[:16])}).expect(t, 200, nil)
}

func TestHTTPMethodNotAllowed(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{
		Status:  func() any { return nil },
		Metrics: http.NotFoundHandler(),
	})
	tests := []struct{ method, path, allow string }{
		{"POST", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/kv/a/b", "GET, HEAD, PUT, DELETE"},
		{"POST", "/kv", "GET, HEAD"},
		{"DELETE", "/kv", "GET, HEAD"},
		{"PUT", "/status", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
	}
	for _, tc := range tests {
		r := do(t, h, tc.method, tc.path, nil)
		r.expect(t, 405, map[string]any{"code": "method_not_allowed"})
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
}

func TestHTTPUnknownEndpoint(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{}) // no Status, no Metrics
	for _, path := range []string{"/", "/nope", "/kvx", "/status", "/metrics"} {
		do(t, h, "GET", path, nil).expect(t, 404, map[string]any{"code": "not_found"})
	}
}

func TestHTTPClusterErrors(t *testing.T) {
	tests := []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{node.ErrNoLeader, 503, "no_leader", "1"},
		{fmt.Errorf("proposing: %w", node.ErrNoLeader), 503, "no_leader", "1"},
		{node.ErrProposalDropped, 503, "proposal_dropped", "1"},
		{node.ErrStopped, 503, "stopped", ""},
		{node.ErrRemoved, 503, "stopped", ""},
		{node.ErrTooLarge, 413, "too_large", ""},
		{context.DeadlineExceeded, 504, "timeout", ""},
		{fmt.Errorf("wait: %w", context.Canceled), 504, "timeout", ""},
		{errors.New("disk on fire"), 500, "internal", ""},
	}
	for _, tc := range tests {
		t.Run(tc.code+"/"+tc.err.Error(), func(t *testing.T) {
			store := NewStore()
			mustApply(t, store, 1, EncodePut("k", []byte("v")))
			h := newTestHandler(t, HandlerConfig{Store: store, Cluster: errCluster{tc.err}})
			for _, req := range [][2]string{{"PUT", "/kv/k"}, {"DELETE", "/kv/k"}, {"GET", "/kv/k"}, {"GET", "/kv?prefix=k"}} {
				r := do(t, h, req[0], req[1], strings.NewReader("v"))
				r.expect(t, tc.status, map[string]any{"code": tc.code})
				if got := r.header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("%s %s: Retry-After %q, want %q", req[0], req[1], got, tc.retryAfter)
				}
				if tc.status == 500 && r.body["error"] != "internal error" {
					t.Errorf("internal error leaked to the client: %s", r.raw)
				}
			}
			// Serializable reads need no cluster, so they work regardless.
			do(t, h, "GET", "/kv/k?serializable=true", nil).expect(t, 200, map[string]any{"value": "v"})
			do(t, h, "GET", "/kv?serializable=true", nil).expect(t, 200, map[string]any{"count": 1.0})
		})
	}
}

func TestHTTPTimeout(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{Cluster: stuckCluster{}, RequestTimeout: 20 * time.Millisecond})
	for _, req := range [][2]string{{"PUT", "/kv/k"}, {"DELETE", "/kv/k"}, {"GET", "/kv/k"}, {"GET", "/kv"}} {
		do(t, h, req[0], req[1], strings.NewReader("v")).expect(t, 504, map[string]any{"code": "timeout"})
	}
}

func TestHTTPUnexpectedResult(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{Cluster: resultCluster{}})
	do(t, h, "PUT", "/kv/k", strings.NewReader("v")).expect(t, 500, map[string]any{"code": "internal"})
	do(t, h, "DELETE", "/kv/k", nil).expect(t, 500, map[string]any{"code": "internal"})
}

func TestHTTPLinearizableAndSerializableReads(t *testing.T) {
	c := &applyCluster{store: NewStore()}
	h := newTestHandler(t, HandlerConfig{Store: c.store, Cluster: c})
	do(t, h, "PUT", "/kv/k", strings.NewReader("v")).expect(t, 200, nil)
	steps := []struct {
		target    string
		status    int
		wantReads int64 // ReadIndex calls so far
	}{
		{"/kv/k", 200, 1},
		{"/kv/k?serializable=true", 200, 1},
		{"/kv/k?serializable=1", 200, 1},
		{"/kv/k?serializable=false", 200, 2},
		{"/kv/missing", 404, 3},
		{"/kv/missing?serializable=true", 404, 3},
		{"/kv", 200, 4},
		{"/kv?prefix=k&serializable=true", 200, 4},
		{"/kv/k?serializable=maybe", 400, 4},
	}
	for _, s := range steps {
		do(t, h, "GET", s.target, nil).expect(t, s.status, nil)
		if got := c.reads.Load(); got != s.wantReads {
			t.Fatalf("after GET %s: %d ReadIndex calls, want %d", s.target, got, s.wantReads)
		}
	}
	if c.proposals.Load() != 1 {
		t.Fatalf("reads made proposals: %d", c.proposals.Load())
	}
}

func TestHTTPValueEncoding(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{})
	do(t, h, "PUT", "/kv/bin", strings.NewReader("\xff\x00a")).expect(t, 200, nil)
	do(t, h, "PUT", "/kv/text", strings.NewReader("<ü>")).expect(t, 200, nil)
	do(t, h, "GET", "/kv/bin", nil).expect(t, 200, map[string]any{"value": nil, "value_base64": "/wBh"})
	do(t, h, "GET", "/kv/text", nil).expect(t, 200, map[string]any{"value": "<ü>", "value_base64": nil})
	do(t, h, "GET", "/kv/text?encoding=base64", nil).expect(t, 200, map[string]any{"value": nil, "value_base64": "PMO8Pg=="})
	do(t, h, "GET", "/kv/text?encoding=hex", nil).expect(t, 400, map[string]any{"code": "bad_request"})
	if r := do(t, h, "GET", "/kv/text", nil); !strings.Contains(r.raw, `"<ü>"`) {
		t.Fatalf("value is HTML-escaped: %s", r.raw)
	}
	r := do(t, h, "GET", "/kv?encoding=base64", nil)
	kvs := r.body["kvs"].([]any)
	if kvs[0].(map[string]any)["value_base64"] != "/wBh" || kvs[1].(map[string]any)["value_base64"] != "PMO8Pg==" {
		t.Fatalf("listing ignores encoding: %s", r.raw)
	}
}

func listKeys(t *testing.T, r response) []string {
	t.Helper()
	keys := []string{}
	for _, kv := range r.body["kvs"].([]any) {
		keys = append(keys, kv.(map[string]any)["key"].(string))
	}
	if int(r.body["count"].(float64)) != len(keys) {
		t.Fatalf("count %v for %d keys", r.body["count"], len(keys))
	}
	return keys
}

func TestHTTPList(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{ListLimit: 3, MaxListLimit: 4})
	r := do(t, h, "GET", "/kv", nil)
	r.expect(t, 200, map[string]any{"count": 0.0, "more": false, "next": nil})
	if r.body["kvs"] == nil {
		t.Fatalf("empty listing has null kvs: %s", r.raw)
	}
	for _, k := range []string{"a", "b/1", "b/2", "b/3", "b/4", "b/5", "c"} {
		do(t, h, "PUT", "/kv/"+k, strings.NewReader("v-"+k)).expect(t, 200, nil)
	}
	tests := []struct {
		query string
		keys  []string
		more  bool
		next  any
	}{
		{"", []string{"a", "b/1", "b/2"}, true, "b/3"},                  // default limit 3
		{"?limit=100", []string{"a", "b/1", "b/2", "b/3"}, true, "b/4"}, // capped at 4
		{"?prefix=b/&limit=2", []string{"b/1", "b/2"}, true, "b/3"},
		{"?prefix=b/&start=b/3&limit=2", []string{"b/3", "b/4"}, true, "b/5"},
		{"?prefix=b/&start=b/5", []string{"b/5"}, false, nil},
		{"?prefix=b/&start=a", []string{"b/1", "b/2", "b/3"}, true, "b/4"}, // start before the prefix
		{"?prefix=b/&start=c", []string{}, false, nil},
		{"?prefix=zzz", []string{}, false, nil},
		{"?start=b/4", []string{"b/4", "b/5", "c"}, false, nil},
		{"?start=a&end=b/2", []string{"a", "b/1"}, false, nil},
		{"?end=b", []string{"a"}, false, nil},
		{"?start=c&end=a", []string{}, false, nil},
	}
	for _, tc := range tests {
		r := do(t, h, "GET", "/kv"+tc.query, nil)
		r.expect(t, 200, map[string]any{"more": tc.more, "next": tc.next})
		if got := listKeys(t, r); !reflect.DeepEqual(got, tc.keys) {
			t.Errorf("GET /kv%s: keys %q, want %q", tc.query, got, tc.keys)
		}
	}
	first := do(t, h, "GET", "/kv?prefix=a", nil).body["kvs"].([]any)[0].(map[string]any)
	if first["value"] != "v-a" || first["create_index"] != 1.0 || first["mod_index"] != 1.0 {
		t.Fatalf("listing entry %v", first)
	}
	for _, bad := range []string{"?limit=0", "?limit=-1", "?limit=x", "?prefix=b&end=c", "?start=" + strings.Repeat("s", 2000)} {
		do(t, h, "GET", "/kv"+bad, nil).expect(t, 400, map[string]any{"code": "bad_request"})
	}
}

func TestHTTPStatusAndMetrics(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{
		Status: func() any { return map[string]any{"id": "0000000000000001", "leader": true} },
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "raftbus_server_is_leader 1\n")
		}),
	})
	do(t, h, "GET", "/status", nil).expect(t, 200, map[string]any{"id": "0000000000000001", "leader": true})
	r := do(t, h, "GET", "/metrics", nil)
	if r.status != 200 || r.raw != "raftbus_server_is_leader 1\n" {
		t.Fatalf("metrics: %d %q", r.status, r.raw)
	}
	bad := newTestHandler(t, HandlerConfig{Status: func() any { return func() {} }})
	do(t, bad, "GET", "/status", nil).expect(t, 500, map[string]any{"code": "internal"})
}

func TestHTTPHead(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{})
	do(t, h, "PUT", "/kv/k", strings.NewReader("v")).expect(t, 200, nil)
	if r := do(t, h, "HEAD", "/kv/k", nil); r.status != 200 {
		t.Fatalf("HEAD existing key: %d", r.status)
	}
	if r := do(t, h, "HEAD", "/kv/missing", nil); r.status != 404 {
		t.Fatalf("HEAD missing key: %d", r.status)
	}
}

func TestNewHandlerValidatesConfig(t *testing.T) {
	s := NewStore()
	c := &applyCluster{store: s}
	bad := []HandlerConfig{
		{Cluster: c},
		{Store: s},
		{Store: s, Cluster: c, MaxValueBytes: -1},
		{Store: s, Cluster: c, MaxKeyBytes: -1},
		{Store: s, Cluster: c, RequestTimeout: -time.Second},
		{Store: s, Cluster: c, ListLimit: -1},
		{Store: s, Cluster: c, ListLimit: 20, MaxListLimit: 10},
	}
	for i, cfg := range bad {
		if _, err := NewHandler(cfg); err == nil {
			t.Errorf("config %d accepted: %+v", i, cfg)
		}
	}
	cfg := HandlerConfig{Store: s, Cluster: c, MaxListLimit: 10}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxValueBytes != DefaultMaxValueBytes || cfg.MaxKeyBytes != DefaultMaxKeyBytes ||
		cfg.RequestTimeout != DefaultRequestTimeout || cfg.ListLimit != 10 || cfg.Logger == nil {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
}

// TestHTTPConcurrentClients runs writers and linearizable readers through
// one handler at once (run with -race).
func TestHTTPConcurrentClients(t *testing.T) {
	c := &applyCluster{store: NewStore()}
	h := newTestHandler(t, HandlerConfig{Store: c.store, Cluster: c})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				key := fmt.Sprintf("/kv/w%d/%d", w, i%5)
				req := httptest.NewRequest("PUT", key, strings.NewReader(fmt.Sprint(i)))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					t.Errorf("PUT %s: %d %s", key, rec.Code, rec.Body)
				}
				for _, target := range []string{key, "/kv?prefix=w"} {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
					if rec.Code != 200 {
						t.Errorf("GET %s: %d %s", target, rec.Code, rec.Body)
					}
				}
			}
		})
	}
	wg.Wait()
	if c.store.Len() != 20 || c.store.AppliedIndex() != 200 {
		t.Fatalf("%d keys, applied %d; want 20, 200", c.store.Len(), c.store.AppliedIndex())
	}
}
