package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/internal/nodehook"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// Hidden modes: the parent re-executes its own binary with one of these as
// the first argument to run a node or the NATS servers in a process of
// their own, so that each one's CPU time and peak RSS can be read from
// /proc.
const (
	modeNode = "__node"
	modeNATS = "__nats"
)

// Transports compared by the cluster benchmark.
const (
	transportRaftbus  = "raftbus"  // raftbridge over natsbus, one NATS server
	transportRafthttp = "rafthttp" // etcd's rafthttp
	transportNATS3    = "raftbus-3nats"
	// transportXInline is an experiment: raftbridge over inlineBus.
	transportXInline = "raftbus-xinline"
	// transportEmbedded runs raftbus unchanged, deployed differently: each
	// node process embeds its own NATS server (the three joined by routes)
	// and connects to it in-process, so a message crosses one TCP hop
	// (the route), as with rafthttp, instead of two.
	transportEmbedded = "raftbus-embedded"
)

// nodeSettings are the node.Config tunables; both transports get the same.
type nodeSettings struct {
	TickInterval    time.Duration `json:"tick_interval"`
	ElectionTicks   int           `json:"election_ticks"`
	HeartbeatTicks  int           `json:"heartbeat_ticks"`
	MaxSizePerMsg   uint64        `json:"max_size_per_msg"`
	MaxInflightMsgs int           `json:"max_inflight_msgs"`
	SnapshotEntries uint64        `json:"snapshot_entries"`
	// MemTableSize is raftstore.Options.MemTableSize (0: its default).
	MemTableSize uint64 `json:"memtable_size"`
	// ExpDeferCommitSync enables savingStorage.deferCommit (an experiment).
	ExpDeferCommitSync bool `json:"exp_defer_commit_sync,omitempty"`
}

// childMember is one member as the parent tells a node about it.
type childMember struct {
	ID          uint64    `json:"id"`
	Name        string    `json:"name"`
	Incarnation uuid.UUID `json:"incarnation"`
	PeerURL     string    `json:"peer_url"`
}

// childNodeConfig is what the parent sends a node child on its stdin, once
// every child has reported its listeners.
type childNodeConfig struct {
	Transport   string        `json:"transport"`
	Cluster     uuid.UUID     `json:"cluster"`
	ID          uint64        `json:"id"`
	Incarnation uuid.UUID     `json:"incarnation"`
	Members     []childMember `json:"members"`
	NATSURL     string        `json:"nats_url,omitempty"`
	// NATSSeedRoute is, for transportEmbedded, the route URL of the first
	// node's server, which the other nodes' servers join (empty for the
	// first node).
	NATSSeedRoute string       `json:"nats_seed_route,omitempty"`
	DataDir       string       `json:"data_dir"`
	NoSync        bool         `json:"no_sync"`
	Node          nodeSettings `json:"node"`
	// ProfilePrefix, when set, makes the child write <prefix>.cpu.pprof
	// (from start to stop) and <prefix>.allocs.pprof (at stop).
	ProfilePrefix string `json:"profile_prefix,omitempty"`
	Verbose       bool   `json:"verbose,omitempty"`
}

// childHello is the first line a node child prints: its listeners.
type childHello struct {
	PID     int    `json:"pid"`
	Ctl     string `json:"ctl"`
	PeerURL string `json:"peer_url"`
	HTTPURL string `json:"http_url"`
}

// childRoute is, for transportEmbedded, the line a node prints once its
// embedded NATS server runs: the route URL other servers may join.
type childRoute struct {
	Route string `json:"route"`
}

// childReady is the second line: the node runs.
type childReady struct {
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

func childLogger(verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func writeJSONLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	_, _ = w.Write(append(b, '\n'))
}

// runNodeChild is the node process: listeners first (so the parent can hand
// every member's peer URL to everyone), then the node, then the control
// server until the parent writes "stop" or closes stdin.
func runNodeChild() error {
	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	ctlLn, err := listen()
	if err != nil {
		return err
	}
	peerLn, err := listen()
	if err != nil {
		return err
	}
	httpLn, err := listen()
	if err != nil {
		return err
	}
	writeJSONLine(os.Stdout, childHello{
		PID: os.Getpid(), Ctl: ctlLn.Addr().String(),
		PeerURL: "http://" + peerLn.Addr().String(), HTTPURL: "http://" + httpLn.Addr().String(),
	})
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg childNodeConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	log := childLogger(cfg.Verbose).With("node", cfg.ID, "transport", cfg.Transport)

	if cfg.ProfilePrefix != "" {
		f, err := os.Create(cfg.ProfilePrefix + ".cpu.pprof")
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	var embedded *natsserver.Server
	if cfg.Transport == transportEmbedded {
		embedded, err = startEmbeddedNATS(cfg)
		if err != nil {
			writeJSONLine(os.Stdout, childRoute{})
			return err
		}
		defer func() { embedded.Shutdown(); embedded.WaitForShutdown() }()
		writeJSONLine(os.Stdout, childRoute{Route: "nats-route://" + embedded.ClusterAddr().String()})
	}
	nd, cleanup, err := startNode(cfg, peerLn, embedded, log)
	if err != nil {
		writeJSONLine(os.Stdout, childReady{Error: err.Error()})
		return err
	}
	h := &nodeCtl{n: nd.node, store: nd.store}
	go serveCtl(ctlLn, h)
	hh, err := kv.NewHandler(kv.HandlerConfig{Store: nd.kv, Cluster: nd.node, Logger: log})
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: hh, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = httpSrv.Serve(httpLn) }()
	writeJSONLine(os.Stdout, childReady{Ready: true})

	// Wait for "stop" (or EOF: the parent died) or for the node to stop by
	// itself.
	lines := make(chan struct{})
	go func() {
		for {
			l, err := in.ReadString('\n')
			if err != nil || strings.TrimSpace(l) == "stop" {
				close(lines)
				return
			}
		}
	}()
	select {
	case <-lines:
	case <-nd.node.Done():
		log.Error("node stopped by itself", "err", nd.node.Err())
	}
	if cfg.ProfilePrefix != "" {
		pprof.StopCPUProfile()
		if err := writeProfile("allocs", cfg.ProfilePrefix+".allocs.pprof"); err != nil {
			log.Warn("alloc profile", "err", err)
		}
	}
	_ = ctlLn.Close()
	_ = httpSrv.Close()
	cleanup()
	return nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.Lookup(name).WriteTo(f, 0)
}

// runningNode is a node with the pieces the child needs after start.
type runningNode struct {
	node  *node.Node
	kv    *kv.Store
	store *savingStorage
}

// startNode wires one node exactly like server.Start (raftstore with fsync,
// kv state machine, node runtime) with either transport, and returns a
// cleanup that halts it and closes everything it opened.
func startNode(cfg childNodeConfig, peerLn net.Listener, embedded *natsserver.Server, log *slog.Logger) (*runningNode, func(), error) {
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*runningNode, func(), error) {
		cleanup()
		return nil, nil, err
	}
	st, err := raftstore.Open(filepath.Join(cfg.DataDir, "raft"), raftstore.Options{Logger: log, NoSync: cfg.NoSync, MemTableSize: cfg.Node.MemTableSize})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { _ = st.Close() })
	store := &savingStorage{Storage: st, deferCommit: cfg.Node.ExpDeferCommitSync}
	sm := kv.NewStore()

	nc := node.Config{
		Cluster: cfg.Cluster, ID: cfg.ID, Incarnation: cfg.Incarnation, Name: fmt.Sprintf("n%d", cfg.ID),
		Storage: store, StateMachine: sm, Logger: log,
		TickInterval:    cfg.Node.TickInterval,
		ElectionTicks:   cfg.Node.ElectionTicks,
		HeartbeatTicks:  cfg.Node.HeartbeatTicks,
		MaxSizePerMsg:   cfg.Node.MaxSizePerMsg,
		MaxInflightMsgs: cfg.Node.MaxInflightMsgs,
		SnapshotEntries: cfg.Node.SnapshotEntries,
	}
	for _, m := range cfg.Members {
		nc.Peers = append(nc.Peers, node.Member{ID: raftbridge.ID(m.ID), Name: m.Name, Incarnation: m.Incarnation})
	}
	switch cfg.Transport {
	case transportRaftbus, transportNATS3:
		conn, err := nats.Connect(cfg.NATSURL, nats.Name(nc.Name), nats.MaxReconnects(-1))
		if err != nil {
			return fail(fmt.Errorf("connect to NATS %s: %w", cfg.NATSURL, err))
		}
		closers = append(closers, conn.Close)
		b, err := natsbus.New(natsbus.Config{Conn: conn, Cluster: cfg.Cluster, Self: cfg.Incarnation, Logger: log})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { _ = b.Close() })
		nc.Bus = b
		_ = peerLn.Close()
	case transportEmbedded:
		conn, err := nats.Connect("", nats.InProcessServer(embedded), nats.Name(nc.Name), nats.MaxReconnects(-1))
		if err != nil {
			return fail(fmt.Errorf("connect in-process to the embedded NATS server: %w", err))
		}
		closers = append(closers, conn.Close)
		b, err := natsbus.New(natsbus.Config{Conn: conn, Cluster: cfg.Cluster, Self: cfg.Incarnation, Logger: log})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { _ = b.Close() })
		nc.Bus = b
		_ = peerLn.Close()
	case transportXInline:
		conn, err := nats.Connect(cfg.NATSURL, nats.Name(nc.Name), nats.MaxReconnects(-1))
		if err != nil {
			return fail(fmt.Errorf("connect to NATS %s: %w", cfg.NATSURL, err))
		}
		closers = append(closers, conn.Close)
		b := newInlineBus(conn, cfg.Cluster, cfg.Incarnation)
		closers = append(closers, func() { _ = b.Close() })
		nc.Bus = b
		_ = peerLn.Close()
	case transportRafthttp:
		peers := map[uint64]string{}
		for _, m := range cfg.Members {
			if m.ID != cfg.ID {
				peers[m.ID] = m.PeerURL
			}
		}
		zl := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(os.Stderr), zapcore.WarnLevel))
		clusterID := clusterID64(cfg.Cluster)
		nodehook.SetTransport(&nc, func(p nodehook.Peer) (nodehook.Transport, error) {
			return newHTTPTransport(p, cfg.ID, clusterID, peerLn, peers, zl, log), nil
		})
	default:
		return fail(fmt.Errorf("unknown transport %q", cfg.Transport))
	}
	n, err := node.New(nc)
	if err != nil {
		_ = peerLn.Close()
		return fail(err)
	}
	closers = append(closers, n.Halt)
	return &runningNode{node: n, kv: sm, store: store}, cleanup, nil
}

// clusterID64 derives rafthttp's 64-bit cluster ID from the cluster UUID.
func clusterID64(u uuid.UUID) uint64 {
	var id uint64
	for _, b := range u[8:] {
		id = id<<8 | uint64(b)
	}
	if id == 0 {
		id = 1
	}
	return id
}

// nodeCtl serves the control protocol for a node.
type nodeCtl struct {
	n     *node.Node
	store *savingStorage
}

func (h *nodeCtl) put(ctx context.Context, key string, value []byte) (uint64, error) {
	idx, _, err := h.n.Propose(ctx, kv.EncodePut(key, value))
	return idx, err
}

func (h *nodeCtl) status() ctlStatus {
	s := h.store.snapshotStats()
	return ctlStatus{ID: h.n.ID(), Leader: h.n.Leader(), Applied: h.n.AppliedIndex(), Saves: &s}
}

// natsHello is the line a NATS child prints once its servers accept
// connections.
type natsHello struct {
	PID  int      `json:"pid"`
	URLs []string `json:"urls"`
}

// runNATSChild runs one NATS server, or a cluster of several joined by
// routes, until stdin says "stop" or closes.
func runNATSChild(args []string) error {
	fs := flag.NewFlagSet(modeNATS, flag.ContinueOnError)
	servers := fs.Int("servers", 1, "number of servers (joined by routes when > 1)")
	profile := fs.String("profile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var all []*natsserver.Server
	defer func() {
		for _, s := range all {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}()
	start := func(o *natsserver.Options) (*natsserver.Server, error) {
		s, err := natsserver.NewServer(o)
		if err != nil {
			return nil, err
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			s.Shutdown()
			return nil, errors.New("nats-server not ready within 10s")
		}
		all = append(all, s)
		return s, nil
	}
	base := func(i int) *natsserver.Options {
		return &natsserver.Options{ServerName: fmt.Sprintf("bench-%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	}
	var urls []string
	if *servers <= 1 {
		s, err := start(base(0))
		if err != nil {
			return err
		}
		urls = append(urls, s.ClientURL())
	} else {
		// The first server's route port is chosen by the kernel; the others
		// route to it and learn each other by gossip.
		var seed string
		for i := range *servers {
			o := base(i)
			o.Cluster = natsserver.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: -1}
			if seed != "" {
				o.Routes = natsserver.RoutesFromStr(seed)
			}
			s, err := start(o)
			if err != nil {
				return err
			}
			if seed == "" {
				seed = "nats-route://" + s.ClusterAddr().String()
			}
			urls = append(urls, s.ClientURL())
		}
		if err := checkMesh(urls, 15*time.Second); err != nil {
			return err
		}
	}
	writeJSONLine(os.Stdout, natsHello{PID: os.Getpid(), URLs: urls})
	in := bufio.NewReader(os.Stdin)
	for {
		l, err := in.ReadString('\n')
		if err != nil || strings.TrimSpace(l) == "stop" {
			return nil
		}
	}
}

// checkMesh returns once a request from every server reaches a responder
// on every other server: the routes are up and interest has propagated.
func checkMesh(urls []string, within time.Duration) error {
	deadline := time.Now().Add(within)
	conns := make([]*nats.Conn, len(urls))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i, u := range urls {
		c, err := nats.Connect(u)
		if err != nil {
			return err
		}
		conns[i] = c
		subj := fmt.Sprintf("bench.mesh.%d", i)
		if _, err := c.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
	}
	for i, c := range conns {
		for j := range conns {
			if i == j {
				continue
			}
			for {
				if _, err := c.Request(fmt.Sprintf("bench.mesh.%d", j), nil, 200*time.Millisecond); err == nil {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("NATS server %d cannot reach a subscriber on server %d", i+1, j+1)
				}
			}
		}
	}
	return nil
}

// startEmbeddedNATS starts the node's own NATS server for transportEmbedded:
// the node connects in-process; client and route ports are chosen by the
// kernel (DontListen would also keep the route listener closed); it routes
// to the seed server unless it is the seed.
func startEmbeddedNATS(cfg childNodeConfig) (*natsserver.Server, error) {
	o := &natsserver.Options{
		ServerName: fmt.Sprintf("n%d", cfg.ID), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: natsserver.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: -1},
	}
	if cfg.NATSSeedRoute != "" {
		o.Routes = natsserver.RoutesFromStr(cfg.NATSSeedRoute)
	}
	s, err := natsserver.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS server not ready within 10s")
	}
	return s, nil
}
