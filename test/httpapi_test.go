package test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/raftbus/raftbus/node"
)

type errReply struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func call(t *testing.T, method, url string, body io.Reader) (int, errReply, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r errReply
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &r); err != nil || r.Error == "" || r.Code == "" {
			t.Fatalf("%s %s: %d with a non-JSON or empty error body %q", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, r, resp.Header
}

// Reference node test 6: the HTTP API's error cases on a real node.
func TestHTTPErrors(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	u := c.servers[0].URL()

	if code, r, _ := call(t, http.MethodGet, u+"/kv/missing", nil); code != http.StatusNotFound || r.Code != "not_found" {
		t.Fatalf("unknown key: %d %+v", code, r)
	}
	big := strings.NewReader(strings.Repeat("x", 600<<10))
	if code, r, _ := call(t, http.MethodPut, u+"/kv/big", big); code != http.StatusRequestEntityTooLarge || r.Code != "too_large" {
		t.Fatalf("oversized body: %d %+v", code, r)
	}
	if code, r, h := call(t, http.MethodPost, u+"/kv/k", nil); code != http.StatusMethodNotAllowed || r.Code != "method_not_allowed" || h.Get("Allow") == "" {
		t.Fatalf("bad method: %d %+v allow=%q", code, r, h.Get("Allow"))
	}
	if code, r, _ := call(t, http.MethodPut, u+"/kv/"+strings.Repeat("k", 2000), strings.NewReader("v")); code != http.StatusBadRequest || r.Code != "bad_key" {
		t.Fatalf("bad key: %d %+v", code, r)
	}

	// No leader: two of three nodes down, the third cannot elect itself.
	c.servers[1].Stop()
	c.servers[2].Stop()
	c.servers[1], c.servers[2] = nil, nil
	var code int
	var r errReply
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		code, r, _ = call(t, http.MethodPut, u+"/kv/k", strings.NewReader("v"))
		if code == http.StatusServiceUnavailable && r.Code == "no_leader" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusServiceUnavailable || r.Code != "no_leader" {
		t.Fatalf("no leader: %d %+v", code, r)
	}
	if code, r, _ := call(t, http.MethodGet, u+"/kv/k", nil); code != http.StatusServiceUnavailable || r.Code != "no_leader" {
		t.Fatalf("linearizable read without a leader: %d %+v", code, r)
	}
	// A serializable read still answers from local state.
	if code, _, _ := call(t, http.MethodGet, u+"/kv/missing?serializable=true", nil); code != http.StatusNotFound {
		t.Fatalf("serializable read without a leader: %d", code)
	}
}
