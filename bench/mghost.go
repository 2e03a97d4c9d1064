package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// modeMGHost is the hidden mode of a multi-group host process (section 6,
// --groups): one raftstore.Host, one NATS connection and natsbus, one
// raftbridge.Host and node.Host, and a member of every one of Groups Raft
// groups, wired as server/groups.go does.
const modeMGHost = "__mghost"

// mgHostConfig is what the parent sends a host child on its stdin.
type mgHostConfig struct {
	Cluster     uuid.UUID     `json:"cluster"`
	ID          uint64        `json:"id"`
	Incarnation uuid.UUID     `json:"incarnation"`
	Members     []childMember `json:"members"`
	NATSURL     string        `json:"nats_url"`
	DataDir     string        `json:"data_dir"`
	Groups      int           `json:"groups"`
	NoSync      bool          `json:"no_sync"`
	// Metrics registers every component on a prometheus registry (as the
	// server does); off, nothing registers.
	Metrics bool `json:"metrics"`
	// Parallel is how many groups are created at once.
	Parallel int `json:"parallel"`
	// MemProfileRate, when positive, is runtime.MemProfileRate (a finer
	// heap profile for "heapprof").
	MemProfileRate int  `json:"mem_profile_rate,omitempty"`
	Verbose        bool `json:"verbose,omitempty"`
}

// mgHello is the host child's first line; mgReady its second.
type mgHello struct {
	PID int    `json:"pid"`
	Ctl string `json:"ctl"`
}

type mgReady struct {
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
	// StoreSeconds is the time to open the store and every group's
	// Store; NodesSeconds the time to create every node.
	StoreSeconds float64 `json:"store_seconds"`
	NodesSeconds float64 `json:"nodes_seconds"`
}

// mgStats is a host child's answer to "stats" (and, after a full GC,
// "memstats").
type mgStats struct {
	Groups    int `json:"groups"`
	Quiescent int `json:"quiescent"`
	// Leaders is, per group, the leader this host knows (0: none).
	Leaders       []uint64 `json:"leaders,omitempty"`
	WALFsyncs     uint64   `json:"wal_fsyncs"`
	SyncedCommits uint64   `json:"synced_commits"`
	SentFrames    uint64   `json:"sent_frames"`
	SentPayloads  uint64   `json:"sent_payloads"`
	RecvFrames    uint64   `json:"received_frames"`
	Coalesced     uint64   `json:"coalesced_envelopes"`
	CoalescedFr   uint64   `json:"coalesced_frames"`
	PingsSent     uint64   `json:"pings_sent"`
	Proposals     uint64   `json:"proposals"`
	HeapInuse     uint64   `json:"heap_inuse"`
	HeapAlloc     uint64   `json:"heap_alloc"`
	Sys           uint64   `json:"sys"`
	StackInuse    uint64   `json:"stack_inuse"`
	Goroutines    int      `json:"goroutines"`
	MetricSeries  int      `json:"metric_series,omitempty"`
}

// mgHost is the running host in the child.
type mgHost struct {
	cfg    mgHostConfig
	store  *raftstore.Host
	bus    *natsbus.Bus
	bhost  *raftbridge.Host
	nhost  *node.Host
	nodes  []*node.Node
	reg    *prometheus.Registry
	props  atomic.Uint64
	closer []func()
}

func runMGHostChild() error {
	ctlLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	writeJSONLine(os.Stdout, mgHello{PID: os.Getpid(), Ctl: ctlLn.Addr().String()})
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg mgHostConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	if cfg.MemProfileRate > 0 {
		runtime.MemProfileRate = cfg.MemProfileRate
	}
	log := childLogger(cfg.Verbose).With("host", cfg.ID)
	h, rd, err := startMGHost(cfg, log)
	if err != nil {
		writeJSONLine(os.Stdout, mgReady{Error: err.Error()})
		return err
	}
	go serveCtl(ctlLn, h)
	rd.Ready = true
	writeJSONLine(os.Stdout, rd)

	var prof *os.File
	for {
		l, err := in.ReadString('\n')
		cmd, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
		if err != nil || cmd == "stop" {
			break
		}
		switch cmd {
		case "stats":
			writeJSONLine(os.Stdout, h.stats(arg == "leaders", false))
		case "memstats":
			writeJSONLine(os.Stdout, h.stats(false, true))
		case "cpuprof-start":
			var e string
			if prof, err = os.Create(arg); err == nil {
				err = pprof.StartCPUProfile(prof)
			}
			if err != nil {
				e = err.Error()
			}
			writeJSONLine(os.Stdout, childReady{Ready: err == nil, Error: e})
		case "cpuprof-stop":
			pprof.StopCPUProfile()
			if prof != nil {
				prof.Close()
			}
			writeJSONLine(os.Stdout, childReady{Ready: true})
		case "heapprof":
			var e string
			if err := writeProfile("heap", arg); err != nil {
				e = err.Error()
			}
			writeJSONLine(os.Stdout, childReady{Ready: e == "", Error: e})
		default:
			writeJSONLine(os.Stdout, childReady{Error: "unknown command " + cmd})
		}
	}
	_ = ctlLn.Close()
	h.close()
	return nil
}

func startMGHost(cfg mgHostConfig, log *slog.Logger) (_ *mgHost, rd mgReady, err error) {
	h := &mgHost{cfg: cfg}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	var reg prometheus.Registerer
	if cfg.Metrics {
		h.reg = prometheus.NewRegistry()
		reg = h.reg
	}
	t0 := time.Now()
	h.store, err = raftstore.OpenHost(filepath.Join(cfg.DataDir, "raft"), raftstore.Options{Logger: log, NoSync: cfg.NoSync, Registerer: reg})
	if err != nil {
		return nil, rd, err
	}
	h.closer = append(h.closer, func() { _ = h.store.Close() })
	stores := make([]*raftstore.Store, cfg.Groups)
	if err := parallelDo(cfg.Groups, cfg.Parallel, func(g int) error {
		var e error
		stores[g], e = h.store.Group(uint64(g))
		return e
	}); err != nil {
		return nil, rd, err
	}
	rd.StoreSeconds = time.Since(t0).Seconds()

	name := fmt.Sprintf("h%d", cfg.ID)
	conn, err := nats.Connect(cfg.NATSURL, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, rd, fmt.Errorf("connect to NATS %s: %w", cfg.NATSURL, err)
	}
	h.closer = append(h.closer, conn.Close)
	if h.bus, err = natsbus.New(natsbus.Config{Conn: conn, Cluster: cfg.Cluster, Self: cfg.Incarnation, Logger: log, Registerer: reg}); err != nil {
		return nil, rd, err
	}
	h.closer = append(h.closer, func() { _ = h.bus.Close() })
	if h.bhost, err = raftbridge.NewHost(raftbridge.HostConfig{Cluster: cfg.Cluster, Incarnation: cfg.Incarnation, Bus: h.bus, Logger: log, Registerer: reg}); err != nil {
		return nil, rd, err
	}
	h.closer = append(h.closer, func() { _ = h.bhost.Close() })
	if h.nhost, err = node.NewHost(node.HostConfig{Bridge: h.bhost, Logger: log}); err != nil {
		return nil, rd, err
	}
	h.closer = append(h.closer, h.nhost.Close)

	t1 := time.Now()
	var peers []node.Member
	for _, m := range cfg.Members {
		peers = append(peers, node.Member{ID: raftbridge.ID(m.ID), Name: m.Name, Incarnation: m.Incarnation})
	}
	h.nodes = make([]*node.Node, cfg.Groups)
	// Halting thousands of nodes one by one takes long: halt them at once.
	h.closer = append(h.closer, func() {
		var wg sync.WaitGroup
		for _, n := range h.nodes {
			if n != nil {
				wg.Add(1)
				go func() { defer wg.Done(); n.Halt() }()
			}
		}
		wg.Wait()
	})
	if err := parallelDo(cfg.Groups, cfg.Parallel, func(g int) error {
		n, e := node.New(node.Config{
			Cluster: cfg.Cluster, ID: cfg.ID, Incarnation: cfg.Incarnation, Name: name, Group: uint64(g),
			Host: h.nhost, Storage: stores[g], StateMachine: kv.NewStore(), Peers: peers, Logger: log, Registerer: reg,
		})
		h.nodes[g] = n
		if e != nil {
			return fmt.Errorf("group %d: %w", g, e)
		}
		return nil
	}); err != nil {
		return nil, rd, err
	}
	if err := h.bhost.Start(); err != nil {
		return nil, rd, err
	}
	rd.NodesSeconds = time.Since(t1).Seconds()
	return h, rd, nil
}

// parallelDo runs f(0..n-1) on up to p goroutines and returns the first
// error.
func parallelDo(n, p int, f func(int) error) error {
	p = max(1, min(p, n))
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return e.(error)
	}
	return nil
}

func (h *mgHost) close() {
	for i := len(h.closer) - 1; i >= 0; i-- {
		h.closer[i]()
	}
	h.closer = nil
}

func (h *mgHost) stats(leaders, gc bool) mgStats {
	ns := h.nhost.Stats()
	ss := h.store.Stats()
	bs := h.bus.Stats()
	hs := h.bhost.Stats()
	st := mgStats{
		Groups: ns.Groups, Quiescent: ns.Quiescent, WALFsyncs: ss.WALFsyncs, SyncedCommits: ss.SyncedCommits,
		SentFrames: bs.SentFrames, SentPayloads: bs.SentPayloads, RecvFrames: bs.ReceivedFrames,
		Coalesced: hs.CoalescedEnvelopes, CoalescedFr: hs.CoalescedFrames, PingsSent: hs.PingsSent,
		Proposals: h.props.Load(), Goroutines: runtime.NumGoroutine(),
	}
	if leaders {
		st.Leaders = make([]uint64, len(h.nodes))
		for g, n := range h.nodes {
			st.Leaders[g] = n.Leader()
		}
	}
	if gc {
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
		if h.reg != nil {
			if mfs, err := h.reg.Gather(); err == nil {
				for _, mf := range mfs {
					st.MetricSeries += len(mf.GetMetric())
				}
			}
			runtime.GC()
			debug.FreeOSMemory()
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapInuse, st.HeapAlloc, st.Sys, st.StackInuse = ms.HeapInuse, ms.HeapAlloc, ms.Sys, ms.StackInuse
	return st
}

// put routes key to its group (kv.ShardOf) and proposes it there; a
// follower forwards the proposal to its leader.
func (h *mgHost) put(ctx context.Context, key string, value []byte) (uint64, error) {
	h.props.Add(1)
	n := h.nodes[kv.ShardOf(key, len(h.nodes))]
	idx, _, err := n.Propose(ctx, kv.EncodePut(key, value))
	return idx, err
}

func (h *mgHost) status() ctlStatus {
	st := ctlStatus{ID: h.cfg.ID}
	if len(h.nodes) > 0 {
		st.Leader, st.Applied = h.nodes[0].Leader(), h.nodes[0].AppliedIndex()
	}
	return st
}
