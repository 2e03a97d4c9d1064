package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case modeNode:
			err = runNodeChild()
		case modeNATS:
			err = runNATSChild(os.Args[2:])
		case modeMGHost:
			err = runMGHostChild()
		default:
			os.Exit(runMain(os.Args[1:]))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(runMain(nil))
}

func runMain(args []string) int {
	o, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		o.live = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// report is the whole result, as --json prints it.
type report struct {
	Machine  machineInfo       `json:"machine"`
	Settings map[string]any    `json:"settings"`
	Bus      []*busResult      `json:"transport_results,omitempty"`
	Ping     []*pingResult     `json:"transport_ping_pong,omitempty"`
	PingSum  []pingSummary     `json:"transport_ping_pong_summary,omitempty"`
	BusSum   []busSummary      `json:"transport_summary,omitempty"`
	Runs     []*clusterRun     `json:"cluster_runs,omitempty"`
	Summary  []*clusterSummary `json:"cluster_summary,omitempty"`
	Goals    []goal            `json:"goals,omitempty"`
	Snapshot *snapResult       `json:"snapshot,omitempty"`
	Scaling  []scalingRow      `json:"scaling,omitempty"`
	Groups   *mgReport         `json:"multigroup,omitempty"`
	Seconds  float64           `json:"total_seconds"`
}

func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	if o.replot != "" {
		return replot(o.replot, o.plotPath)
	}
	began := time.Now()
	progress := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	rep := &report{Machine: readMachine(), Settings: map[string]any{
		"rounds": o.rounds, "clients": o.clients, "warmup": o.warmup.String(), "duration": o.duration.String(),
		"value_size": o.valueSize, "keys": o.keys, "load": o.via, "fsync": !o.noSync, "node": o.node,
		"transports": o.transports, "smoke": o.smoke,
	}}
	progress("raftbus bench: %d CPUs, %s, %s; %d round(s)", rep.Machine.NumCPU, rep.Machine.CPUModel, rep.Machine.Go, o.rounds)

	root, err := os.MkdirTemp("", "raftbus-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("data and logs kept in %s", root)
	} else {
		defer os.RemoveAll(root)
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
		if o.profileDir, err = filepath.Abs(o.profileDir); err != nil {
			return err
		}
	}

	if !o.skipBus {
		progress("\n== 1. transport: natsbus vs raw NATS ==")
		if o.profileDir != "" {
			// One profile for the section; every measurement runs under the
			// pprof label run=<bus|raw>-<entry size>-<throughput|ping>, which
			// the goroutines it starts, the NATS server's included, inherit:
			// go tool pprof -tagfocus run=bus-16384-throughput ...
			f, err := os.Create(filepath.Join(o.profileDir, "transport.cpu.pprof"))
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		for r := 1; r <= o.rounds; r++ {
			for _, sz := range busSizes {
				spec := busSpec{EntrySize: sz.size, Count: max(100, int(float64(sz.count)*o.busScale)), Cap: o.busCap, FrameBytes: o.busFrame}
				for i, side := range []func(busSpec) (*busResult, error){runBusSide, runRawSide} {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					var res *busResult
					var err error
					pprof.Do(ctx, pprof.Labels("run", fmt.Sprintf("%s-%d-throughput", []string{"bus", "raw"}[i], sz.size)), func(context.Context) {
						res, err = side(spec)
					})
					if err != nil {
						return fmt.Errorf("transport section: %w", err)
					}
					res.Round = r
					rep.Bus = append(rep.Bus, res)
					progress("[round %d] %s", r, describeBus(res))
				}
				ps := pingSpec{EntrySize: sz.size, Count: max(50, int(5000*o.busScale)), Cap: o.busCap}
				for i, side := range []func(pingSpec) (*pingResult, error){runBusPing, runRawPing} {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					var res *pingResult
					var err error
					pprof.Do(ctx, pprof.Labels("run", fmt.Sprintf("%s-%d-ping", []string{"bus", "raw"}[i], sz.size)), func(context.Context) {
						res, err = side(ps)
					})
					if err != nil {
						return fmt.Errorf("transport section: %w", err)
					}
					res.Round = r
					rep.Ping = append(rep.Ping, res)
					progress("[round %d] %s", r, describePing(res))
				}
			}
		}
		rep.BusSum = summarizeBus(rep.Bus)
		rep.PingSum = summarizePing(rep.Ping)
		if o.profileDir != "" {
			pprof.StopCPUProfile()
		}
	}

	if !o.skipCluster {
		progress("\n== 2. 3-node cluster: %s ==", strings.Join(o.transports, " vs "))
		for r := 1; r <= o.rounds; r++ {
			for _, tr := range o.transports {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				cr, err := runClusterRound(ctx, o, root, tr, r, progress)
				if err != nil {
					return err
				}
				rep.Runs = append(rep.Runs, cr)
			}
		}
		rep.Summary = summarizeClusters(rep.Runs, o.transports, o.clients)
	}
	if !o.skipSnapshot {
		progress("\n== 4. snapshot transfer: streamed with file stores vs raw NATS ==")
		if rep.Snapshot, err = runSnapshot(ctx, o, root, progress); err != nil {
			return fmt.Errorf("snapshot section: %w", err)
		}
	}
	if o.scaling {
		progress("\n== 5. cost as work grows: 3, 5, 7 nodes x 128 B, 1 KiB, 16 KiB ==")
		if rep.Scaling, err = runScaling(ctx, o, root, progress); err != nil {
			return fmt.Errorf("scaling section: %w", err)
		}
	}
	if o.mg.Enabled {
		progress("\n== 6. many Raft groups per process ==")
		if rep.Groups, err = runMultiGroup(ctx, o, root, progress); err != nil {
			return fmt.Errorf("groups section: %w", err)
		}
	}
	if !o.smoke {
		// Smoke counts are too small for the goals to mean anything.
		rep.Goals = append(evaluateGoals(rep.BusSum, rep.Summary, o.clients, o.raftexample), snapshotGoals(rep.Snapshot)...)
		if rep.Groups != nil {
			rep.Goals = append(rep.Goals, rep.Groups.Goals...)
		}
	}
	rep.Seconds = time.Since(began).Seconds()

	if o.plotPath != "" {
		if err := writePlot(o.plotPath, rep); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		progress("plot written to %s", o.plotPath)
	}
	if o.jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
		progress("JSON written to %s", o.jsonFile)
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTables(stdout, rep.Machine, rep.BusSum, rep.PingSum, rep.Summary, rep.Goals, o.rounds, o.via, !o.noSync)
	printSnapshot(stdout, rep.Snapshot, o.smoke)
	printScaling(stdout, rep.Scaling)
	printMultiGroup(stdout, rep.Groups)
	fmt.Fprintf(stdout, "\ntotal %.0fs\n", rep.Seconds)
	return nil
}

// runClusterRound starts a fresh cluster on transport tr, runs every client
// count against its leader and stops it.
func runClusterRound(ctx context.Context, o *options, root, tr string, round int, progress func(string, ...any)) (*clusterRun, error) {
	label := fmt.Sprintf("%s-r%d", tr, round)
	dir := filepath.Join(root, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	spec := clusterSpec{
		Transport: tr, Nodes: o.nodes, Dir: dir, NoSync: o.noSync, Node: o.node,
		ProfileDir: o.profileDir, Label: label, Verbose: o.verbose, NATSGoMaxProcs: o.natsProcs,
	}
	switch tr {
	case transportRaftbus, transportXInline:
		spec.NATSServers = 1
	case transportNATS3:
		spec.NATSServers = 3
	}
	t0 := time.Now()
	c, err := startCluster(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: start cluster: %w", label, err)
	}
	cr := &clusterRun{Transport: tr, Round: round, Leader: c.ids[c.leader]}
	progress("[%s] cluster up in %.1fs, leader n%d", label, time.Since(t0).Seconds(), cr.Leader)
	var runErr error
	for _, clients := range o.clients {
		st, err := runStep(ctx, c, o, tr, round, clients, label, progress)
		if err != nil {
			runErr = fmt.Errorf("%s, %d clients: %w", label, clients, err)
			break
		}
		cr.Steps = append(cr.Steps, st)
	}
	cr.PeakRSSBytes, cr.BrokerPeakRSSBytes = c.peakRSS()
	for _, s := range c.statuses() {
		cr.Saves = append(cr.Saves, s.Saves)
	}
	c.stop()
	if err := c.exitErrors(); err != nil && runErr == nil {
		runErr = fmt.Errorf("%s: %w", label, err)
	}
	if !o.keep && runErr == nil {
		// Every round starts on a disk in the same state.
		_ = os.RemoveAll(dir)
	}
	if runErr != nil {
		return nil, runErr
	}
	rss := make([]string, len(cr.PeakRSSBytes))
	for i, p := range cr.PeakRSSBytes {
		rss[i] = fmt.Sprintf("%.0f", float64(p)/(1<<20))
	}
	extra := ""
	if cr.BrokerPeakRSSBytes > 0 {
		extra = fmt.Sprintf(", NATS %.0f MiB", float64(cr.BrokerPeakRSSBytes)/(1<<20))
	}
	progress("[%s] peak RSS MiB n1..n%d: %s%s", label, len(rss), strings.Join(rss, "/"), extra)
	if s := cr.Saves[cr.Leader-1]; s != nil && s.Saves > 0 {
		progress("[%s] leader Save: %d calls, %.1f entries/call, %.0f µs/call, %.0f%% of calls hard-state only, %.0f%% need no fsync (raft.MustSync false)",
			label, s.Saves, float64(s.Entries)/float64(s.Saves), float64(s.SaveNanos)/float64(s.Saves)/1e3,
			100*float64(s.HardStateOnly)/float64(s.Saves), 100*float64(s.NotRequired)/float64(s.Saves))
	}
	return cr, nil
}

// runStep runs one client count against the cluster's leader and measures
// the CPU of every process over the same window.
func runStep(ctx context.Context, c *cluster, o *options, tr string, round, clients int, label string, progress func(string, ...any)) (*stepResult, error) {
	var cpu0, cpu1 []time.Duration
	var b0, b1, self0, self1 time.Duration
	var busy0, busy1, tot0, tot1 uint64
	var save0, save1 ctlStatus
	self := os.Getpid()
	leaderCtl, err := dialCtl(c.leaderTarget().ctl)
	if err != nil {
		return nil, err
	}
	defer leaderCtl.Close()
	spec := loadSpec{
		Clients: clients, Warmup: o.warmup, Measure: o.duration, MaxOps: o.maxOps,
		ValueSize: o.valueSize, Keys: o.keys, Via: o.via,
	}
	if o.live {
		spec.progress = func(elapsed time.Duration, commits int64) {
			fmt.Fprintf(os.Stderr, "\r\033[K[%s] %3d clients: %4.1fs of %v, %7.0f commits/s so far", label, clients,
				elapsed.Seconds(), o.duration, float64(commits)/elapsed.Seconds())
		}
		defer fmt.Fprint(os.Stderr, "\r\033[K")
	}
	res, err := runLoad(ctx, c.leaderTarget(), spec, window{
		onStart: func() {
			cpu0, b0 = c.cpu()
			self0, _ = procCPU(self)
			busy0, tot0, _ = machineCPU()
			save0, _ = leaderCtl.status(5 * time.Second)
		},
		onEnd: func() {
			cpu1, b1 = c.cpu()
			self1, _ = procCPU(self)
			busy1, tot1, _ = machineCPU()
			save1, _ = leaderCtl.status(5 * time.Second)
		},
	})
	if err != nil {
		if e := c.exitErrors(); e != nil {
			err = fmt.Errorf("%w; %w", err, e)
		}
		return nil, err
	}
	st := &stepResult{
		Transport: tr, Round: round, Clients: clients, Commits: res.Commits, Errors: res.Errors,
		Seconds: res.Elapsed.Seconds(), lat: res.Node, rtt: res.RTT, FirstError: res.FirstErr,
	}
	st.CommitsPerSec = float64(res.Commits) / res.Elapsed.Seconds()
	st.Latency, st.RTT = summarize(res.Node), summarize(res.RTT)
	var nodesCPU float64
	for i := range cpu0 {
		d := (cpu1[i] - cpu0[i]).Seconds()
		st.NodeCPUSeconds = append(st.NodeCPUSeconds, d)
		nodesCPU += d
	}
	st.BrokerCPUSeconds = (b1 - b0).Seconds()
	st.LoadGenCPUSeconds = (self1 - self0).Seconds()
	if save0.Saves != nil && save1.Saves != nil {
		st.LeaderSaves = save1.Saves.minus(save0.Saves)
	}
	if tot1 > tot0 {
		st.MachineBusy = float64(busy1-busy0) / float64(tot1-tot0)
	}
	if res.Commits > 0 {
		st.CPUPer1kNodes = nodesCPU / float64(res.Commits) * 1000
		st.CPUPer1kTotal = (nodesCPU + st.BrokerCPUSeconds) / float64(res.Commits) * 1000
	}
	l := st.Latency
	if o.via == "http" {
		l = st.RTT
	}
	errNote := ""
	if st.Errors > 0 {
		errNote = fmt.Sprintf(", %d errors (first: %s)", st.Errors, st.FirstError)
	}
	saves := ""
	if s := st.LeaderSaves; s != nil && s.Saves > 0 && res.Commits > 0 {
		st.LeaderSaveBusy = float64(s.SaveNanos) / 1e9 / st.Seconds
		saves = fmt.Sprintf("  leader: %.2f Saves/commit, %.0f µs/Save, %.0f%% need no fsync, Ready loop %.0f%% in Save",
			float64(s.Saves)/float64(res.Commits), float64(s.SaveNanos)/float64(s.Saves)/1e3, 100*float64(s.NotRequired)/float64(s.Saves),
			100*st.LeaderSaveBusy)
	}
	progress("[%s] %3d clients: %7.0f commits/s  p50 %s p99 %s p99.9 %s ms  rtt p50 %s ms  CPU %.3f s/1k (+broker %.3f)  loadgen %.2f CPU-s  machine %.0f%% busy%s%s",
		label, clients, st.CommitsPerSec, ms(l.P50), ms(l.P99), ms(l.P999), ms(st.RTT.P50), st.CPUPer1kNodes, st.CPUPer1kTotal,
		st.LoadGenCPUSeconds, 100*st.MachineBusy, saves, errNote)
	return st, nil
}

// replot redraws the plot of a saved JSON report.
func replot(jsonPath, plotPath string) error {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	for _, s := range rep.Summary {
		if s.LatencyHistogram == "" {
			return fmt.Errorf("%s has no latency histograms (written by an older bench)", jsonPath)
		}
		if s.lat, err = hdrhistogram.Decode([]byte(s.LatencyHistogram)); err != nil {
			return fmt.Errorf("%s: %s/%d: %w", jsonPath, s.Transport, s.Clients, err)
		}
	}
	return writePlot(plotPath, &rep)
}
