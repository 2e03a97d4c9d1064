package test

import (
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability suite (linearizability_test.go) records a history of
// puts and linearizable gets made through the HTTP API of real clusters
// while faults are injected, and checks it with porcupine against a model
// of one register per key.
//
// Short mode (the default, what CI runs): each fault is injected once, for
// a couple of seconds; the whole suite takes about a minute on two cores
// under -race:
//
//	go test -race -count=1 -run 'TestLinearizability' ./test/
//
// Long mode: each fault is injected again and again, with random hold
// times, for several minutes (RAFTBUS_LIN_FAULT_TIME, default 3m):
//
//	go test -race -count=1 -timeout 2h -run 'TestLinearizability' ./test/ -long
//	RAFTBUS_LONG=1 go test -race -count=1 -timeout 2h -run 'TestLinearizability' ./test/
//
// A history that fails the check is written with porcupine's visualization
// to $RAFTBUS_LIN_OUT, default test/testdata/lin-failures/ (ignored by git),
// and its path is logged.
var long = flag.Bool("long", false, "linearizability suite: run each fault for minutes (also RAFTBUS_LONG=1)")

func longMode() bool { return *long || os.Getenv("RAFTBUS_LONG") == "1" }

// faultTime is how long each fault's phase keeps injecting in long mode.
func faultTime() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RAFTBUS_LIN_FAULT_TIME")); err == nil && d > 0 {
		return d
	}
	return 3 * time.Minute
}

// kvInput is an operation on one key: a put of a value, or a get.
type kvInput struct {
	put   bool
	key   string
	value string
}

// kvOutput is what a get returned; a put has none.
type kvOutput struct {
	found bool
	value string
}

// kvModel is a register per key: the state is the key's value ("" when
// absent; the workload never writes ""). Histories are partitioned by key,
// which keeps the search small and is sound because operations on
// different keys commute.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, cur := input.(kvInput), state.(string)
		if in.put {
			return true, in.value
		}
		out := output.(kvOutput)
		if !out.found {
			return cur == "", cur
		}
		return out.value == cur, cur
	},
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		out := output.(kvOutput)
		if !out.found {
			return fmt.Sprintf("get(%s) -> absent", in.key)
		}
		return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
	},
	DescribeState: func(state any) string {
		if state.(string) == "" {
			return "absent"
		}
		return state.(string)
	},
}

// outcome classifies one finished client request.
type outcome int

const (
	// outcomeOK: the operation took effect (a put) or returned a value (a
	// get) between its call and return.
	outcomeOK outcome = iota
	// outcomeFailed: the operation certainly did not take effect (the
	// connection was refused, the request was rejected as invalid). A get
	// whose outcome is unknown also counts here: a read that returned
	// nothing constrains nothing and is left out.
	outcomeFailed
	// outcomeUnknown: a put that may or may not take effect, now or at any
	// later time (a timeout, a 503/504, a reset connection). It stays in
	// the history with an infinite return time, so porcupine may place it
	// anywhere after its call, or after everything (not at all).
	outcomeUnknown
)

// history collects the operations of one phase from concurrent clients.
// Each client lane gets a fresh ID after an unknown outcome, as a crashed
// Jepsen process does: its pending put never returns, and the lane's later
// operations must not overlap it in the visualization.
type history struct {
	start time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	clients int
	ok      int
	okAfter map[string]int // successes whose call came after a mark
	marks   map[string]int64
	unknown int
}

func newHistory() *history {
	return &history{start: time.Now(), okAfter: map[string]int{}, marks: map[string]int64{}}
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

// newClient returns a fresh client ID.
func (h *history) newClient() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients++
	return h.clients - 1
}

// mark records the current time under name, for okSince.
func (h *history) mark(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.marks[name] = h.now()
	h.okAfter[name] = 0
}

// record adds one finished operation.
func (h *history) record(client int, in kvInput, out kvOutput, call, ret int64, oc outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch oc {
	case outcomeFailed:
		return
	case outcomeUnknown:
		h.unknown++
		ret = math.MaxInt64
	case outcomeOK:
		h.ok++
		for name, at := range h.marks {
			if call > at {
				h.okAfter[name]++
			}
		}
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// okSince is the number of successful operations called after mark name.
func (h *history) okSince(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.okAfter[name]
}

func (h *history) counts() (ops, ok, unknown int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops), h.ok, h.unknown
}

func (h *history) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// linOutDir is where failing histories are kept.
func linOutDir() string {
	if d := os.Getenv("RAFTBUS_LIN_OUT"); d != "" {
		return d
	}
	return filepath.Join("testdata", "lin-failures")
}

// checkLinearizable checks h and, if it is not linearizable (or the check
// cannot decide within its timeout), writes the visualization and fails t.
func checkLinearizable(t *testing.T, name string, h *history) {
	t.Helper()
	ops := h.operations()
	n, ok, unknown := h.counts()
	timeout := 60 * time.Second
	if longMode() {
		timeout = 10 * time.Minute
	}
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	t.Logf("%s: %d operations (%d ok, %d with unknown outcome): %s in %v", name, n, ok, unknown, res, time.Since(began).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	path, err := writeVisualization(name, info)
	if err != nil {
		t.Errorf("writing the visualization: %v", err)
	}
	t.Errorf("%s: history is %s (not proven linearizable); visualization: %s", name, res, path)
}

func writeVisualization(name string, info porcupine.LinearizationInfo) (string, error) {
	dir := linOutDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	safe := strings.NewReplacer("/", "_", " ", "_").Replace(name)
	path, err := filepath.Abs(filepath.Join(dir, fmt.Sprintf("%s-%s.html", safe, time.Now().UTC().Format("20060102T150405.000"))))
	if err != nil {
		return "", err
	}
	if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
		return path, fmt.Errorf("porcupine.VisualizePath: %w", err)
	}
	return path, nil
}

// The checker itself: a stale read after an acknowledged put is caught, a
// put with an unknown outcome may or may not have happened, and a failing
// history is written as a visualization.
func TestLinearizabilityCheckerModel(t *testing.T) {
	op := func(c int, in kvInput, out kvOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(v string) kvInput { return kvInput{put: true, key: "k", value: v} }
	get := kvInput{key: "k"}
	inf := int64(math.MaxInt64)
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"read own write", []porcupine.Operation{op(0, put("a"), kvOutput{}, 0, 10), op(1, get, kvOutput{true, "a"}, 20, 30)}, porcupine.Ok},
		{"stale read", []porcupine.Operation{
			op(0, put("a"), kvOutput{}, 0, 10), op(0, put("b"), kvOutput{}, 20, 30), op(1, get, kvOutput{true, "a"}, 40, 50)}, porcupine.Illegal},
		{"unknown put seen later", []porcupine.Operation{op(0, put("a"), kvOutput{}, 0, inf), op(1, get, kvOutput{true, "a"}, 100, 110)}, porcupine.Ok},
		{"unknown put never seen", []porcupine.Operation{op(0, put("a"), kvOutput{}, 0, inf), op(1, get, kvOutput{}, 100, 110)}, porcupine.Ok},
		{"unknown put seen then unseen", []porcupine.Operation{
			op(0, put("a"), kvOutput{}, 0, inf), op(1, get, kvOutput{true, "a"}, 100, 110), op(1, get, kvOutput{}, 120, 130)}, porcupine.Illegal},
		{"lost acknowledged put", []porcupine.Operation{op(0, put("a"), kvOutput{}, 0, 10), op(1, get, kvOutput{}, 20, 30)}, porcupine.Illegal},
	}
	for _, tc := range cases {
		if res, _ := porcupine.CheckOperationsVerbose(kvModel, tc.ops, 10*time.Second); res != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, res, tc.want)
		}
	}
	t.Setenv("RAFTBUS_LIN_OUT", t.TempDir())
	_, info := porcupine.CheckOperationsVerbose(kvModel, cases[1].ops, 10*time.Second)
	path, err := writeVisualization("self-test", info)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		t.Fatalf("visualization %s missing or empty: %v", path, err)
	}
}
