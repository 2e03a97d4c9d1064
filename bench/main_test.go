package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/node"
)

// TestMain lets the test binary play the node and NATS children: the
// cluster benchmark re-executes os.Executable, which under `go test` is
// this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case modeNode:
			if err := runNodeChild(); err != nil {
				fmt.Fprintln(os.Stderr, "bench child:", err)
				os.Exit(1)
			}
			os.Exit(0)
		case modeNATS:
			if err := runNATSChild(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "bench child:", err)
				os.Exit(1)
			}
			os.Exit(0)
		case modeMGHost:
			if err := runMGHostChild(); err != nil {
				fmt.Fprintln(os.Stderr, "bench child:", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

func TestParseProcStatCPU(t *testing.T) {
	// The command name holds a space and a ')' to check that fields are
	// counted from the last one; utime 250 and stime 50 ticks.
	stat := "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	d, err := parseProcStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if d != 3*time.Second {
		t.Fatalf("cpu = %v, want 3s", d)
	}
	if _, err := parseProcStatCPU([]byte("1234 (x) S 1 2")); err == nil {
		t.Fatal("short stat line accepted")
	}
}

func TestParseProcStatusMem(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  900000 kB\nVmHWM:\t   65536 kB\nVmRSS:\t   32768 kB\nThreads:\t9\n"
	rss, peak, err := parseProcStatusMem([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 32<<20 || peak != 64<<20 {
		t.Fatalf("rss %d peak %d, want %d and %d", rss, peak, 32<<20, 64<<20)
	}
	if _, _, err := parseProcStatusMem([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without VmHWM accepted")
	}
}

func TestParseProcStat(t *testing.T) {
	busy, total, err := parseProcStat([]byte("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if busy != 160 || total != 1000 {
		t.Fatalf("busy %d total %d, want 160 and 1000", busy, total)
	}
}

func TestOwnProcessStats(t *testing.T) {
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, peak, err := procMem(os.Getpid()); err != nil || peak <= 0 {
		t.Fatalf("peak %d, err %v", peak, err)
	}
	if _, total, err := machineCPU(); err != nil || total == 0 {
		t.Fatalf("total %d, err %v", total, err)
	}
}

// fakeCtl answers puts with an index, or an error for the key "fail".
type fakeCtl struct{ puts []string }

func (f *fakeCtl) put(_ context.Context, key string, value []byte) (uint64, error) {
	if key == "fail" {
		return 0, errors.New("node: no leader")
	}
	f.puts = append(f.puts, key+"="+string(value))
	return uint64(len(f.puts)), nil
}

func (f *fakeCtl) status() ctlStatus { return ctlStatus{ID: 2, Leader: 3, Applied: 7} }

func TestCtlProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeCtl{}
	done := make(chan struct{})
	go func() { serveCtl(ln, h); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done })

	c, err := dialCtl(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, kv := range [][2]string{{"a", "1"}, {"key/b", strings.Repeat("v", 300)}} {
		idx, _, err := c.put(kv[0], []byte(kv[1]), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i+1) {
			t.Fatalf("index %d, want %d", idx, i+1)
		}
	}
	_, _, err = c.put("fail", nil, 5*time.Second)
	var perr *errProposal
	if !errors.As(err, &perr) || !strings.Contains(perr.msg, "no leader") {
		t.Fatalf("err = %v, want a proposal error saying no leader", err)
	}
	st, err := c.status(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != 3 || st.Applied != 7 {
		t.Fatalf("status %+v", st)
	}
	if len(h.puts) != 2 || h.puts[0] != "a=1" {
		t.Fatalf("puts %v", h.puts)
	}
}

func entries(from, n uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := range n {
		out = append(out, &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(from + i), Data: []byte("x")})
	}
	return out
}

func TestSavingStorageCounts(t *testing.T) {
	for _, deferCommit := range []bool{false, true} {
		t.Run(fmt.Sprintf("defer=%v", deferCommit), func(t *testing.T) {
			ms := node.NewMemoryStorage()
			s := &savingStorage{Storage: ms, deferCommit: deferCommit}
			hs := func(term, vote, commit uint64) *raftpb.HardState {
				return &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)}
			}
			steps := []struct {
				hs   *raftpb.HardState
				ents []*raftpb.Entry
			}{
				{hs(1, 1, 0), entries(1, 2)}, // vote and entries: must sync
				{hs(1, 1, 2), nil},           // commit only
				{nil, entries(3, 1)},         // entries only
				{hs(1, 1, 3), nil},           // commit only
				{nil, nil},                   // nothing: not counted
			}
			for _, st := range steps {
				if err := s.Save(st.hs, st.ents); err != nil {
					t.Fatal(err)
				}
			}
			got := s.snapshotStats()
			if deferCommit {
				if got.Saves != 2 || got.Deferred != 2 || got.Entries != 3 {
					t.Fatalf("stats %+v, want 2 saves, 2 deferred, 3 entries", got)
				}
				// The deferred commit travels with the next entries.
				hs, _, _ := ms.InitialState()
				if hs.GetCommit() != 2 {
					t.Fatalf("stored commit %d, want 2 (the last commit-only save is still pending)", hs.GetCommit())
				}
				return
			}
			if got.Saves != 4 || got.HardStateOnly != 2 || got.NotRequired != 2 || got.Entries != 3 {
				t.Fatalf("stats %+v, want 4 saves, 2 hard-state only, 2 not requiring sync, 3 entries", got)
			}
			if hs, _, _ := ms.InitialState(); hs.GetCommit() != 3 {
				t.Fatalf("stored commit %d, want 3", hs.GetCommit())
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseFlags([]string{"--smoke", "--clients", "2,4", "--nats-cluster"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.rounds != 1 || len(o.clients) != 2 || o.clients[1] != 4 || o.duration >= time.Second {
		t.Fatalf("smoke options %+v", o)
	}
	if got := strings.Join(o.transports, ","); got != "raftbus,rafthttp,raftbus-3nats" {
		t.Fatalf("transports %s", got)
	}
	for _, bad := range [][]string{{"--rounds", "0"}, {"--load", "grpc"}, {"--clients", "0"}, {"--transports", "tcp"}, {"extra"}} {
		if _, err := parseFlags(bad, &stderr); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestSmoke runs the whole benchmark in smoke mode: the transport section,
// both clusters as child processes, the table, the JSON and the plot.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS and six node processes")
	}
	dir := t.TempDir()
	o, err := parseFlags([]string{"--smoke", "--json", "--plot", filepath.Join(dir, "smoke.png")}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out, progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, o, &out, &progress); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.BusSum) != len(busSizes) || len(rep.PingSum) != len(busSizes) {
		t.Fatalf("transport summary %+v, ping %+v", rep.BusSum, rep.PingSum)
	}
	if len(rep.Summary) != len(o.transports)*len(o.clients) {
		t.Fatalf("%d cluster summaries, want %d", len(rep.Summary), len(o.transports)*len(o.clients))
	}
	for _, s := range rep.Summary {
		if s.CommitsPerSec <= 0 || s.Latency.P50 <= 0 || s.PeakRSSMiB <= 0 || s.CPUPer1kNodes <= 0 {
			t.Errorf("implausible summary %+v", s)
		}
		if (s.Transport == transportRaftbus) != (s.BrokerPeakRSSMiB > 0) {
			t.Errorf("%s: broker RSS %.0f MiB", s.Transport, s.BrokerPeakRSSMiB)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "smoke.png")); err != nil || fi.Size() == 0 {
		t.Fatalf("plot: %v", err)
	}
	// The JSON carries the latency histograms: the plot can be redrawn.
	js := filepath.Join(dir, "smoke.json")
	if err := os.WriteFile(js, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := replot(js, filepath.Join(dir, "replot.png")); err != nil {
		t.Fatal(err)
	}
}

func Example_parseInts() {
	n, _ := parseInts("1, 16,64")
	fmt.Println(n)
	// Output: [1 16 64]
}
