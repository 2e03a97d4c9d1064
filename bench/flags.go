package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/raftbus/raftbus/raftbridge"
)

// options are the command-line flags.
type options struct {
	rounds      int
	clients     []int
	warmup      time.Duration
	duration    time.Duration
	maxOps      int64
	valueSize   int
	keys        int
	via         string
	busCap      time.Duration
	busScale    float64
	busFrame    int
	natsProcs   int
	live        bool // stderr is a terminal: overwrite a live progress line
	expInline   bool
	skipBus     bool
	skipCluster bool
	natsCluster bool
	transports  []string
	jsonOut     bool
	jsonFile    string
	replot      string
	plotPath    string
	profileDir  string
	smoke       bool
	noSync      bool
	keep        bool
	verbose     bool
	raftexample float64
	node        nodeSettings

	skipSnapshot   bool
	snapshotBytes  int64
	snapshotWindow int
	// nodes is the cluster size of sections 2 and 3; scaling runs the
	// cost-as-work-grows grid instead of them.
	nodes   int
	scaling bool
	// mg are the flags of section 6 (--groups, multigroup.go).
	mg mgOptions
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run . [flags]   (from the bench directory)\n\n%s\nflags:\n", strings.TrimSpace(usageText))
		fs.PrintDefaults()
	}
	clients := fs.String("clients", "1,16,64", "comma-separated concurrent client counts")
	transports := fs.String("transports", "raftbus,rafthttp", "cluster transports to compare: raftbus (one NATS server process), rafthttp, raftbus-embedded (a NATS server embedded in each node, in-process connection); --nats-cluster adds raftbus-3nats")
	fs.IntVar(&o.rounds, "rounds", 3, "A/B rounds (each round runs every transport once, alternating)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warmup before each measured step")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "measured time per client count")
	fs.Int64Var(&o.maxOps, "max-ops", 2_000_000, "hard cap on proposals per step")
	fs.IntVar(&o.valueSize, "value-size", 128, "value bytes per put")
	fs.IntVar(&o.keys, "keys", 4096, "distinct keys written (bounds the state machine and its snapshots)")
	fs.StringVar(&o.via, "load", "rpc", "how load reaches the leader: rpc (binary control protocol) or http (kv HTTP API)")
	fs.DurationVar(&o.busCap, "bus-duration", 3*time.Second, "time cap of each transport-section measurement")
	fs.Float64Var(&o.busScale, "bus-scale", 1, "scale the transport section's message counts")
	fs.IntVar(&o.busFrame, "bus-frame-bytes", 0, "natsbus.Config.MaxFrameBytes in the transport section (0: natsbus default, ~1 MiB; the cluster always uses the default)")
	fs.BoolVar(&o.skipBus, "skip-bus", false, "skip section 1 (natsbus vs raw NATS)")
	fs.BoolVar(&o.skipCluster, "skip-cluster", false, "skip section 2 (cluster comparison)")
	fs.BoolVar(&o.natsCluster, "nats-cluster", false, "also run raftbus across a 3-server NATS cluster (each node on its own server)")
	fs.IntVar(&o.natsProcs, "nats-gomaxprocs", 0, "GOMAXPROCS of the NATS server process in the cluster section (0: Go's default, the CPU count)")
	fs.BoolVar(&o.expInline, "exp-inline-bus", false, "EXPERIMENT: also run raftbridge over a minimal bus that publishes inline (no send queue), as transport raftbus-xinline")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as JSON on stdout (progress stays on stderr)")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the JSON results to this file (the table still goes to stdout)")
	fs.StringVar(&o.replot, "replot", "", "measure nothing: redraw --plot from the JSON results in this file")
	fs.StringVar(&o.plotPath, "plot", "", "write a PNG of latency distributions and throughput to this file")
	fs.StringVar(&o.profileDir, "profile", "", "write CPU and alloc profiles of every node (and NATS) process into this directory")
	fs.BoolVar(&o.smoke, "smoke", false, "CI mode: tiny counts, one round, a few seconds")
	fs.BoolVar(&o.noSync, "no-sync", false, "disable fsync of Raft state (default: fsync on, as in production)")
	fs.BoolVar(&o.keep, "keep", false, "keep the data directories and logs")
	fs.BoolVar(&o.verbose, "v", false, "verbose node logs (in the kept log files)")
	fs.Float64Var(&o.raftexample, "raftexample", 8700, "etcd raftexample committed ops/s at 16-64 clients on this machine class (perf anchors), for the 2x goal")
	fs.DurationVar(&o.node.TickInterval, "tick", 0, "node.Config.TickInterval (0: node default)")
	fs.Uint64Var(&o.node.MaxSizePerMsg, "max-size-per-msg", 0, "node.Config.MaxSizePerMsg (0: node default)")
	fs.IntVar(&o.node.MaxInflightMsgs, "max-inflight", 0, "node.Config.MaxInflightMsgs (0: node default)")
	fs.Uint64Var(&o.node.SnapshotEntries, "snapshot-entries", 0, "node.Config.SnapshotEntries (0: node default)")
	fs.Uint64Var(&o.node.MemTableSize, "memtable-size", 0, "raftstore.Options.MemTableSize (0: raftstore default)")
	fs.BoolVar(&o.node.ExpDeferCommitSync, "exp-defer-commit-sync", false, "EXPERIMENT, not raftbus behaviour: skip Saves that only move the commit index (raft.MustSync false), to measure that proposed change")
	fs.IntVar(&o.nodes, "nodes", 3, "nodes per cluster in sections 2 and 3")
	fs.BoolVar(&o.scaling, "scaling", false, "also run the cost-as-work-grows grid: 3, 5 and 7 nodes x 128 B, 1 KiB and 16 KiB values, raftbus and rafthttp, at the largest --clients, one round each")
	fs.BoolVar(&o.skipSnapshot, "skip-snapshot", false, "skip section 4 (streamed snapshot transfer vs raw NATS)")
	fs.Int64Var(&o.snapshotBytes, "snapshot-bytes", 1<<30, "snapshot size in section 4 (smoke: 4 MiB)")
	fs.IntVar(&o.snapshotWindow, "snapshot-window", raftbridge.DefaultSnapshotWindow, "raftbridge.Config.SnapshotWindow in section 4")
	registerMGFlags(fs, &o.mg)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if o.clients, err = parseInts(*clients); err != nil {
		return nil, fmt.Errorf("--clients: %w", err)
	}
	for _, t := range strings.Split(*transports, ",") {
		switch t = strings.TrimSpace(t); t {
		case transportRaftbus, transportRafthttp, transportEmbedded:
			o.transports = append(o.transports, t)
		case "":
		default:
			return nil, fmt.Errorf("--transports: unknown transport %q", t)
		}
	}
	if o.natsCluster {
		o.transports = append(o.transports, transportNATS3)
	}
	if o.expInline {
		o.transports = append(o.transports, transportXInline)
	}
	if o.smoke {
		// Smoke defaults apply only to flags not given explicitly.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		apply := func(name string, f func()) {
			if !set[name] {
				f()
			}
		}
		apply("rounds", func() { o.rounds = 1 })
		apply("warmup", func() { o.warmup = 200 * time.Millisecond })
		apply("duration", func() { o.duration = 700 * time.Millisecond })
		apply("bus-duration", func() { o.busCap = 500 * time.Millisecond })
		apply("bus-scale", func() { o.busScale = 0.01 })
		apply("clients", func() { o.clients = []int{1, 16} })
		apply("snapshot-bytes", func() { o.snapshotBytes = 4 << 20 })
	}
	switch {
	case o.rounds < 1:
		return nil, errors.New("--rounds must be at least 1")
	case len(o.clients) == 0:
		return nil, errors.New("--clients is empty")
	case o.via != "rpc" && o.via != "http":
		return nil, fmt.Errorf("--load must be rpc or http, not %q", o.via)
	case o.valueSize < 1 || o.valueSize > 512<<10:
		return nil, errors.New("--value-size must be between 1 and 512 KiB")
	case o.keys < 1:
		return nil, errors.New("--keys must be at least 1")
	case o.duration <= 0 || o.warmup < 0:
		return nil, errors.New("--duration must be positive and --warmup not negative")
	case o.maxOps < 1:
		return nil, errors.New("--max-ops must be at least 1")
	case o.nodes < 1 || o.nodes > 9:
		return nil, errors.New("--nodes must be between 1 and 9")
	case o.snapshotBytes < 1 || o.snapshotWindow < 1:
		return nil, errors.New("--snapshot-bytes and --snapshot-window must be positive")
	case o.replot != "" && o.plotPath == "":
		return nil, errors.New("--replot needs --plot")
	}
	for _, c := range o.clients {
		if c < 1 || c > 1024 {
			return nil, fmt.Errorf("--clients: %d is not between 1 and 1024", c)
		}
	}
	return o, nil
}

const usageText = `
raftbus bench: side-by-side benchmark of the raftbus transport.

  1. natsbus vs raw nats.go publish/subscribe of the same Raft envelopes
     (MsgApp with 128 B, 1 KiB, 16 KiB entries) through one embedded server.
  2. the same 3-node cluster (raftstore with fsync, kv state machine,
     node.Propose of kv.EncodePut) over raftbus (raftbridge + natsbus on a
     NATS server) and over etcd's rafthttp, at each client count: commits/s,
     latency percentiles, CPU seconds per 1,000 commits, peak RSS per node.
     Each node and the NATS server run as child processes of this binary.
  3. with --nats-cluster, raftbus across a 3-server NATS cluster.
  4. a --snapshot-bytes snapshot streamed between two raftbridge bridges
     with file stores over natsbus vs raw NATS publish of the same bytes:
     throughput ratio and each side's RSS growth (child processes).
  5. with --scaling, commits/s and CPU per commit of raftbus and rafthttp
     for 3, 5 and 7 nodes and 128 B, 1 KiB and 16 KiB values.
  6. with --groups, many Raft groups per process (3 host processes, one
     NATS server): commits/s of --groups-many groups vs 1, the idle CPU and
     memory per group of --groups-total quiescent groups, and frames/s as
     the number of active groups grows. Add --skip-bus --skip-cluster
     --skip-snapshot to run it alone.

Rounds alternate the transports (A/B/A/B). Progress goes to stderr, the
table (or --json) to stdout.`

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
