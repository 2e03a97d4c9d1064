package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/uuid"

	"github.com/raftbus/raftbus/kv"
)

// Section 6 (--groups): many Raft groups per process. Three host processes
// (modeMGHost), each a member of every group, over one NATS server:
//
//  1. aggregate durable commits/s with --groups-many groups vs one group,
//     same closed-loop clients;
//  2. CPU and memory of --groups-total idle (quiescent) groups per host,
//     against hosts with no group, metrics off and on;
//  3. natsbus frames/s per host with k active groups of --groups-total
//     (and of --groups-compare) at a light constant write rate.

// mgOptions are the flags of section 6.
type mgOptions struct {
	Enabled  bool          `json:"-"`
	Total    int           `json:"total"`
	Compare  int           `json:"compare"`
	Many     int           `json:"many"`
	Clients  int           `json:"clients"`
	Duration time.Duration `json:"duration"`
	Idle     time.Duration `json:"idle"`
	Measure  time.Duration `json:"frames_window"`
	Rate     float64       `json:"writes_per_sec_per_active_group"`
	Active   []int         `json:"active"`
	Metrics  bool          `json:"metrics_on_too"`
	Parallel int           `json:"parallel"`
	Rounds   int           `json:"rounds"`
}

func registerMGFlags(fs *flag.FlagSet, m *mgOptions) {
	fs.BoolVar(&m.Enabled, "groups", false, "also run section 6, many Raft groups per process (3 host processes over one NATS server)")
	fs.IntVar(&m.Total, "groups-total", 1000, "section 6: groups per host for the idle and frames measurements (0: skip them)")
	fs.IntVar(&m.Rounds, "groups-rounds", 3, "section 6: rounds of the throughput runs (1 group and --groups-many alternate; medians reported; 0: skip them)")
	fs.IntVar(&m.Compare, "groups-compare", 100, "section 6: the smaller total at which frames/s is measured again (0: skip)")
	fs.IntVar(&m.Many, "groups-many", 64, "section 6: groups of the throughput run (against 1 group)")
	fs.IntVar(&m.Clients, "groups-clients", 64, "section 6: closed-loop clients of the throughput runs, spread over the groups")
	fs.DurationVar(&m.Duration, "groups-duration", 5*time.Second, "section 6: measured time of each throughput run (after --warmup)")
	fs.DurationVar(&m.Idle, "groups-idle", 10*time.Second, "section 6: idle CPU window, once every group is quiescent")
	fs.DurationVar(&m.Measure, "groups-frames-window", 5*time.Second, "section 6: frames/s window per active-group count")
	fs.Float64Var(&m.Rate, "groups-rate", 5, "section 6: writes/s per active group in the frames measurement")
	fs.BoolVar(&m.Metrics, "groups-metrics", true, "section 6: also measure the idle cost with every component registered on a prometheus registry, as the server does")
	fs.IntVar(&m.Parallel, "groups-parallel", 16, "section 6: groups created at once in each host")
	m.Active = []int{0, 1, 10, 100}
	fs.Func("groups-active", "section 6: comma-separated active-group counts of the frames measurement (default 0,1,10,100)", func(s string) error {
		xs, err := parseInts(s)
		if err == nil && len(xs) == 0 {
			err = fmt.Errorf("empty list")
		}
		m.Active = xs
		return err
	})
}

// mgThroughput is one closed-loop run of section 6.
type mgThroughput struct {
	Round         int     `json:"round"`
	Groups        int     `json:"groups"`
	Clients       int     `json:"clients"`
	Commits       int64   `json:"commits"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"seconds"`
	CommitsPerSec float64 `json:"commits_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	// LeadersPerHost is how many groups each host led.
	LeadersPerHost []int `json:"leaders_per_host"`
	// WALFsyncsPerSec is per host (mean over hosts); SyncedPerFsync the
	// synced batches each fsync made durable; CommitsPerFsync the client
	// commits per fsync of one host.
	WALFsyncsPerSec float64   `json:"wal_fsyncs_per_sec_per_host"`
	SyncedPerFsync  float64   `json:"synced_batches_per_fsync"`
	CommitsPerFsync float64   `json:"commits_per_host_fsync"`
	HostCPUSeconds  []float64 `json:"host_cpu_seconds"`
	BrokerCPU       float64   `json:"broker_cpu_seconds"`
	LoadGenCPU      float64   `json:"loadgen_cpu_seconds"`
	CPUPerCommitUs  float64   `json:"cpu_us_per_commit_hosts"`
	CPUPerCommitAll float64   `json:"cpu_us_per_commit_with_broker"`
	FramesPerCommit float64   `json:"frames_per_commit"`
	// MachineBusy is the share of all CPUs busy in the window.
	MachineBusy float64 `json:"machine_busy"`
	// OtherCPU is the CPU the machine spent outside the hosts, the broker
	// and the load generator, in cores (kernel threads such as the
	// filesystem journal, or other tenants).
	OtherCPU float64 `json:"other_cpu_cores"`
}

// mgIdle is one idle cluster of section 6.
type mgIdle struct {
	Groups  int  `json:"groups"`
	Metrics bool `json:"metrics"`
	// StartSeconds: processes spawned to every group created on every
	// host; LeadersSeconds to every group with a leader; QuiesceSeconds
	// to every group quiescent on every host.
	StartSeconds   float64   `json:"start_seconds"`
	StoreSeconds   []float64 `json:"store_open_seconds"`
	NodesSeconds   []float64 `json:"nodes_create_seconds"`
	LeadersSeconds float64   `json:"leaders_seconds"`
	QuiesceSeconds float64   `json:"quiesce_seconds"`
	IdleSeconds    float64   `json:"idle_window_seconds"`
	// CPUPercent is each host's CPU in the idle window, % of one core.
	CPUPercent    []float64 `json:"host_cpu_percent"`
	BrokerPercent float64   `json:"broker_cpu_percent"`
	FramesPerSec  []float64 `json:"host_sent_frames_per_sec"`
	// HeapInuse and RSS are each host's after a full GC (and
	// debug.FreeOSMemory).
	HeapInuse    []uint64 `json:"host_heap_inuse_bytes"`
	StackInuse   []uint64 `json:"host_stack_inuse_bytes"`
	RSS          []int64  `json:"host_rss_bytes"`
	Goroutines   []int    `json:"host_goroutines"`
	MetricSeries int      `json:"metric_series,omitempty"`
}

// mgFrames is one active-group count of the frames measurement.
type mgFrames struct {
	Groups         int       `json:"groups"`
	Active         int       `json:"active"`
	Rate           float64   `json:"writes_per_sec_per_active_group"`
	Writes         int64     `json:"writes"`
	Errors         int64     `json:"errors"`
	Seconds        float64   `json:"seconds"`
	FramesPerSec   []float64 `json:"host_sent_frames_per_sec"`
	PayloadsPerSec []float64 `json:"host_sent_payloads_per_sec"`
	MeanFrames     float64   `json:"mean_host_sent_frames_per_sec"`
	CPUPercent     []float64 `json:"host_cpu_percent"`
	// PutMeanMs and PutMaxMs are the writes' latencies in the window.
	PutMeanMs float64 `json:"put_mean_ms"`
	PutMaxMs  float64 `json:"put_max_ms"`
	// QuiescentBefore/After are the quiescent groups, summed over hosts,
	// at the window's edges; LeaderChanges the groups whose leader moved
	// since the previous measurement on this cluster.
	QuiescentBefore int `json:"quiescent_before"`
	QuiescentAfter  int `json:"quiescent_after"`
	LeaderChanges   int `json:"leader_changes"`
}

// mgReport is the result of section 6.
type mgReport struct {
	Options    mgOptions      `json:"options"`
	Throughput []mgThroughput `json:"throughput"`
	// CommitsPerSec is the median over rounds of 1 group and of
	// Options.Many groups; Ratio their ratio.
	CommitsPerSec1    float64  `json:"commits_per_sec_1_group_median"`
	CommitsPerSecMany float64  `json:"commits_per_sec_many_groups_median"`
	Ratio             float64  `json:"throughput_ratio"`
	Idle              []mgIdle `json:"idle"`
	// Per-group costs: (hosts with N groups - hosts with none) / N, mean
	// over hosts, metrics off and (if measured) on.
	HeapPerGroup        float64    `json:"heap_bytes_per_group"`
	RSSPerGroup         float64    `json:"rss_bytes_per_group"`
	HeapPerGroupMetrics float64    `json:"heap_bytes_per_group_metrics_on,omitempty"`
	RSSPerGroupMetrics  float64    `json:"rss_bytes_per_group_metrics_on,omitempty"`
	Frames              []mgFrames `json:"frames"`
	Goals               []goal     `json:"goals"`
}

// mgCluster is a running set of host processes.
type mgCluster struct {
	groups int
	nats   *child
	hosts  []*child
	hellos []mgHello
	ready  []mgReady
	ids    []uint64
	mu     []sync.Mutex
	// leaderOf is, per group, the index of the host leading it.
	leaderOf []int
}

func startMGCluster(ctx context.Context, o *options, dir string, groups int, metrics bool) (_ *mgCluster, err error) {
	c := &mgCluster{groups: groups}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if c.nats, err = spawnChild("nats", filepath.Join(dir, "nats.log"), nil, modeNATS); err != nil {
		return nil, err
	}
	var nh natsHello
	if err := c.nats.readLine(&nh, 30*time.Second); err != nil {
		return nil, err
	}
	const hosts = 3
	c.mu = make([]sync.Mutex, hosts)
	c.hellos = make([]mgHello, hosts)
	c.ready = make([]mgReady, hosts)
	members := make([]childMember, hosts)
	for i := range hosts {
		name := fmt.Sprintf("h%d", i+1)
		ch, err := spawnChild(name, filepath.Join(dir, name+".log"), nil, modeMGHost)
		if err != nil {
			return nil, err
		}
		c.hosts = append(c.hosts, ch)
		if err := ch.readLine(&c.hellos[i], 30*time.Second); err != nil {
			return nil, err
		}
		members[i] = childMember{ID: uint64(i + 1), Name: name, Incarnation: uuid.Must(uuid.NewV7())}
		c.ids = append(c.ids, uint64(i+1))
	}
	cluster := uuid.Must(uuid.NewV7())
	for i, ch := range c.hosts {
		cfg := mgHostConfig{
			Cluster: cluster, ID: members[i].ID, Incarnation: members[i].Incarnation, Members: members,
			NATSURL: nh.URLs[0], DataDir: filepath.Join(dir, ch.name), Groups: groups, NoSync: o.noSync,
			Metrics: metrics, Parallel: o.mg.Parallel, Verbose: o.verbose,
		}
		if o.profileDir != "" && groups == o.mg.Total {
			cfg.MemProfileRate = 4096
		}
		if err := ch.writeLine(cfg); err != nil {
			return nil, fmt.Errorf("%s: send config: %w", ch.name, err)
		}
	}
	for i, ch := range c.hosts {
		if err := ch.readLine(&c.ready[i], 10*time.Minute); err != nil {
			return nil, err
		}
		if !c.ready[i].Ready {
			return nil, fmt.Errorf("%s: %s", ch.name, c.ready[i].Error)
		}
	}
	return c, nil
}

// cmd sends one command line to host i and decodes its answer.
func (c *mgCluster) cmd(i int, line string, v any) error {
	c.mu[i].Lock()
	defer c.mu[i].Unlock()
	if _, err := io.WriteString(c.hosts[i].stdin, line+"\n"); err != nil {
		return fmt.Errorf("%s: %w", c.hosts[i].name, err)
	}
	return c.hosts[i].readLine(v, 2*time.Minute)
}

func (c *mgCluster) stats(what string) ([]mgStats, error) {
	out := make([]mgStats, len(c.hosts))
	for i := range c.hosts {
		if err := c.cmd(i, what, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// waitLeaders polls until every group has a leader that calls itself
// leader, and records which host leads each group.
func (c *mgCluster) waitLeaders(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		sts, err := c.stats("stats leaders")
		if err != nil {
			return err
		}
		lead := make([]int, c.groups)
		missing := 0
		for g := range c.groups {
			lead[g] = -1
			for i, st := range sts {
				if g < len(st.Leaders) && st.Leaders[g] == c.ids[i] {
					lead[g] = i
				}
			}
			if lead[g] < 0 {
				missing++
			}
		}
		if missing == 0 {
			c.leaderOf = lead
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d groups without a leader after %v", missing, c.groups, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitQuiescent polls until every group is quiescent on every host.
func (c *mgCluster) waitQuiescent(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		sts, err := c.stats("stats")
		if err != nil {
			return err
		}
		ok := true
		var q []string
		for _, st := range sts {
			q = append(q, fmt.Sprintf("%d/%d", st.Quiescent, st.Groups))
			if st.Quiescent != c.groups {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every group quiescent after %v (quiescent per host: %s)", within, strings.Join(q, " "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *mgCluster) cpu() (hosts []time.Duration, broker time.Duration) {
	for _, h := range c.hosts {
		hosts = append(hosts, h.cpu())
	}
	return hosts, c.nats.cpu()
}

func (c *mgCluster) stop() {
	var wg sync.WaitGroup
	for _, h := range c.hosts {
		wg.Add(1)
		go func() { defer wg.Done(); h.stop(60 * time.Second) }()
	}
	wg.Wait()
	if c.nats != nil {
		c.nats.stop(20 * time.Second)
	}
}

func (c *mgCluster) exitErrors() error {
	var errs []string
	for _, h := range append(append([]*child{}, c.hosts...), c.nats) {
		if h == nil {
			continue
		}
		select {
		case <-h.exited:
			if h.waitErr != nil {
				errs = append(errs, fmt.Sprintf("%s: %v (log: %s)", h.name, h.waitErr, h.logTail()))
			}
		default:
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// keysByGroup returns, for each of n groups, perGroup keys that
// kv.ShardOf places in it.
func keysByGroup(n, perGroup int) [][]string {
	out := make([][]string, n)
	left := n
	for i := 0; left > 0; i++ {
		k := fmt.Sprintf("k%07d", i)
		g := kv.ShardOf(k, n)
		if len(out[g]) < perGroup {
			out[g] = append(out[g], k)
			if len(out[g]) == perGroup {
				left--
			}
		}
	}
	return out
}

// runMGThroughput runs clients closed-loop clients, client i on group
// i mod groups, each through its group's leader.
func runMGThroughput(ctx context.Context, c *mgCluster, o *options, clients int, profile string) (*mgThroughput, error) {
	keys := keysByGroup(c.groups, 32)
	value := make([]byte, o.valueSize)
	for i := range value {
		value[i] = 'v'
	}
	start := time.Now()
	winStart := start.Add(o.warmup)
	winEnd := winStart.Add(o.mg.Duration)
	var commits, errs atomic.Int64
	var stop atomic.Bool
	hists := make([]*hdrhistogram.Histogram, clients)
	errc := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		g := i % c.groups
		cc, err := dialCtl(c.hellos[c.leaderOf[g]].Ctl)
		if err != nil {
			return nil, err
		}
		hists[i] = newHist()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cc.Close()
			ks := keys[g]
			for j := 0; !stop.Load() && ctx.Err() == nil; j++ {
				t0 := time.Now()
				_, _, err := cc.put(ks[j%len(ks)], value, 15*time.Second)
				t1 := time.Now()
				if _, ok := err.(*errProposal); err != nil && !ok {
					errc <- err
					return
				}
				if t1.Before(winStart) || t1.After(winEnd) {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				commits.Add(1)
				recordMicros(hists[i], t1.Sub(t0))
			}
		}()
	}
	time.Sleep(time.Until(winStart))
	cpu0, b0 := c.cpu()
	self0, _ := procCPU(os.Getpid())
	busy0, tot0, _ := machineCPU()
	st0, err := c.stats("stats")
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return nil, err
	}
	if profile != "" {
		var r childReady
		_ = c.cmd(0, "cpuprof-start "+profile, &r)
	}
	time.Sleep(time.Until(winEnd))
	cpu1, b1 := c.cpu()
	self1, _ := procCPU(os.Getpid())
	busy1, tot1, _ := machineCPU()
	st1, err := c.stats("stats")
	if profile != "" {
		var r childReady
		_ = c.cmd(0, "cpuprof-stop", &r)
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	if e := <-errc; e != nil {
		return nil, fmt.Errorf("client failed: %w", e)
	}
	if err != nil {
		return nil, err
	}
	secs := winEnd.Sub(winStart).Seconds()
	r := &mgThroughput{Groups: c.groups, Clients: clients, Commits: commits.Load(), Errors: errs.Load(), Seconds: secs}
	r.CommitsPerSec = float64(r.Commits) / secs
	all := newHist()
	for _, h := range hists {
		all.Merge(h)
	}
	r.P50Ms, r.P99Ms = float64(all.ValueAtQuantile(50))/1e3, float64(all.ValueAtQuantile(99))/1e3
	r.LeadersPerHost = make([]int, len(c.hosts))
	for _, l := range c.leaderOf {
		r.LeadersPerHost[l]++
	}
	var fsyncs, synced, frames uint64
	var hostCPU float64
	for i := range c.hosts {
		fsyncs += st1[i].WALFsyncs - st0[i].WALFsyncs
		synced += st1[i].SyncedCommits - st0[i].SyncedCommits
		frames += st1[i].SentFrames - st0[i].SentFrames
		d := (cpu1[i] - cpu0[i]).Seconds()
		r.HostCPUSeconds = append(r.HostCPUSeconds, d)
		hostCPU += d
	}
	n := float64(len(c.hosts))
	r.WALFsyncsPerSec = float64(fsyncs) / n / secs
	if fsyncs > 0 {
		r.SyncedPerFsync = float64(synced) / float64(fsyncs)
		r.CommitsPerFsync = float64(r.Commits) / (float64(fsyncs) / n)
	}
	r.BrokerCPU = (b1 - b0).Seconds()
	r.LoadGenCPU = (self1 - self0).Seconds()
	if tot1 > tot0 {
		r.MachineBusy = float64(busy1-busy0) / float64(tot1-tot0)
		ncpu := float64(runtime.NumCPU())
		r.OtherCPU = r.MachineBusy*ncpu - (hostCPU+r.BrokerCPU+r.LoadGenCPU)/secs
	}
	if r.Commits > 0 {
		r.CPUPerCommitUs = hostCPU / float64(r.Commits) * 1e6
		r.CPUPerCommitAll = (hostCPU + r.BrokerCPU) / float64(r.Commits) * 1e6
		r.FramesPerCommit = float64(frames) / float64(r.Commits)
	}
	return r, nil
}

// measureIdle waits for every group to quiesce, measures CPU and frames
// over the idle window, then memory after a full GC.
func measureIdle(ctx context.Context, c *mgCluster, o *options, metrics bool, t0 time.Time, profile string) (*mgIdle, error) {
	r := &mgIdle{Groups: c.groups, Metrics: metrics, StartSeconds: time.Since(t0).Seconds()}
	for _, rd := range c.ready {
		r.StoreSeconds = append(r.StoreSeconds, rd.StoreSeconds)
		r.NodesSeconds = append(r.NodesSeconds, rd.NodesSeconds)
	}
	if c.groups > 0 {
		if err := c.waitLeaders(ctx, 5*time.Minute); err != nil {
			return nil, err
		}
		r.LeadersSeconds = time.Since(t0).Seconds()
		if err := c.waitQuiescent(ctx, 5*time.Minute); err != nil {
			return nil, err
		}
		r.QuiesceSeconds = time.Since(t0).Seconds()
	}
	// Let the start-up's garbage and timers settle.
	time.Sleep(time.Second)
	if profile != "" {
		var rr childReady
		_ = c.cmd(0, "cpuprof-start "+profile+".cpu.pprof", &rr)
	}
	st0, err := c.stats("stats")
	if err != nil {
		return nil, err
	}
	cpu0, b0 := c.cpu()
	w0 := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.mg.Idle):
	}
	cpu1, b1 := c.cpu()
	secs := time.Since(w0).Seconds()
	st1, err := c.stats("stats")
	if err != nil {
		return nil, err
	}
	if profile != "" {
		var rr childReady
		_ = c.cmd(0, "cpuprof-stop", &rr)
	}
	r.IdleSeconds = secs
	for i := range c.hosts {
		r.CPUPercent = append(r.CPUPercent, 100*(cpu1[i]-cpu0[i]).Seconds()/secs)
		r.FramesPerSec = append(r.FramesPerSec, float64(st1[i].SentFrames-st0[i].SentFrames)/secs)
	}
	r.BrokerPercent = 100 * (b1 - b0).Seconds() / secs
	ms, err := c.stats("memstats")
	if err != nil {
		return nil, err
	}
	for i, h := range c.hosts {
		rss, _, _ := procMem(h.pid())
		r.HeapInuse = append(r.HeapInuse, ms[i].HeapInuse)
		r.StackInuse = append(r.StackInuse, ms[i].StackInuse)
		r.RSS = append(r.RSS, rss)
		r.Goroutines = append(r.Goroutines, ms[i].Goroutines)
		r.MetricSeries = max(r.MetricSeries, ms[i].MetricSeries)
	}
	if profile != "" {
		var rr childReady
		_ = c.cmd(0, "heapprof "+profile+".heap.pprof", &rr)
	}
	return r, nil
}

// measureFrames writes to the first k groups at rate writes/s each
// (through their leaders) and measures every host's sent frames/s.
func measureFrames(ctx context.Context, c *mgCluster, o *options, k int, profile string) (*mgFrames, error) {
	k = min(k, c.groups)
	r := &mgFrames{Groups: c.groups, Active: k, Rate: o.mg.Rate}
	// Leaders may have moved (a host that stalled for an election timeout
	// wakes the groups it leads): refresh them, and let woken groups
	// quiesce again first.
	prev := slices.Clone(c.leaderOf)
	_ = c.waitQuiescent(ctx, 30*time.Second)
	if err := c.waitLeaders(ctx, time.Minute); err != nil {
		return nil, err
	}
	for g := range prev {
		if prev[g] != c.leaderOf[g] {
			r.LeaderChanges++
		}
	}
	var latSum, latMax atomic.Int64
	keys := keysByGroup(c.groups, 4)
	value := make([]byte, o.valueSize)
	var writes, errs atomic.Int64
	var counting atomic.Bool
	stopc := make(chan struct{})
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / o.mg.Rate)
	for g := range k {
		cc, err := dialCtl(c.hellos[c.leaderOf[g]].Ctl)
		if err != nil {
			close(stopc)
			wg.Wait()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cc.Close()
			// Spread the groups' writes over the interval.
			select {
			case <-time.After(time.Duration(g) * interval / time.Duration(k)):
			case <-stopc:
				return
			}
			t := time.NewTicker(interval)
			defer t.Stop()
			for j := 0; ; j++ {
				t0 := time.Now()
				_, _, err := cc.put(keys[g][j%len(keys[g])], value, 10*time.Second)
				d := int64(time.Since(t0))
				if counting.Load() {
					if err != nil {
						errs.Add(1)
					} else {
						writes.Add(1)
						latSum.Add(d)
						for m := latMax.Load(); d > m && !latMax.CompareAndSwap(m, d); m = latMax.Load() {
						}
					}
				}
				select {
				case <-t.C:
				case <-stopc:
					return
				}
			}
		}()
	}
	// The active groups wake on their first write; one second to settle.
	time.Sleep(time.Second)
	st0, err := c.stats("stats")
	if err != nil {
		close(stopc)
		wg.Wait()
		return nil, err
	}
	if profile != "" {
		var rr childReady
		_ = c.cmd(0, "cpuprof-start "+profile, &rr)
	}
	cpu0, _ := c.cpu()
	counting.Store(true)
	w0 := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(o.mg.Measure):
	}
	counting.Store(false)
	secs := time.Since(w0).Seconds()
	cpu1, _ := c.cpu()
	st1, err := c.stats("stats")
	if profile != "" {
		var rr childReady
		_ = c.cmd(0, "cpuprof-stop", &rr)
	}
	close(stopc)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	r.Writes, r.Errors, r.Seconds = writes.Load(), errs.Load(), secs
	if r.Writes > 0 {
		r.PutMeanMs = float64(latSum.Load()) / float64(r.Writes) / 1e6
	}
	r.PutMaxMs = float64(latMax.Load()) / 1e6
	for i := range c.hosts {
		r.QuiescentBefore += st0[i].Quiescent
		r.QuiescentAfter += st1[i].Quiescent
	}
	for i := range c.hosts {
		f := float64(st1[i].SentFrames-st0[i].SentFrames) / secs
		r.FramesPerSec = append(r.FramesPerSec, f)
		r.PayloadsPerSec = append(r.PayloadsPerSec, float64(st1[i].SentPayloads-st0[i].SentPayloads)/secs)
		r.CPUPercent = append(r.CPUPercent, 100*(cpu1[i]-cpu0[i]).Seconds()/secs)
		r.MeanFrames += f / float64(len(c.hosts))
	}
	return r, ctx.Err()
}

// runMultiGroup runs section 6.
func runMultiGroup(ctx context.Context, o *options, root string, progress func(string, ...any)) (*mgReport, error) {
	rep := &mgReport{Options: o.mg}
	prof := func(name string) string {
		if o.profileDir == "" {
			return ""
		}
		return filepath.Join(o.profileDir, name)
	}
	// run starts a fresh cluster of n groups, runs f on it and stops it.
	run := func(label string, n int, metrics bool, f func(*mgCluster, time.Time) error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		dir := filepath.Join(root, label)
		t0 := time.Now()
		c, err := startMGCluster(ctx, o, dir, n, metrics)
		if err != nil {
			return fmt.Errorf("%s: start: %w", label, err)
		}
		progress("[%s] %d groups x 3 hosts created in %.1fs (store %.1fs, nodes %.1fs on h1)", label, n, time.Since(t0).Seconds(),
			c.ready[0].StoreSeconds, c.ready[0].NodesSeconds)
		err = f(c, t0)
		t1 := time.Now()
		c.stop()
		if e := c.exitErrors(); e != nil && err == nil {
			err = e
		}
		progress("[%s] stopped in %.1fs", label, time.Since(t1).Seconds())
		if !o.keep {
			_ = os.RemoveAll(dir)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		return nil
	}

	// 1. Throughput: 1 group and many, alternating, --groups-rounds times.
	for round := 1; round <= o.mg.Rounds; round++ {
		for _, n := range []int{1, o.mg.Many} {
			label := fmt.Sprintf("mg-tput-%d-r%d", n, round)
			if err := run(label, n, false, func(c *mgCluster, _ time.Time) error {
				if err := c.waitLeaders(ctx, 2*time.Minute); err != nil {
					return err
				}
				p := ""
				if round == 1 {
					p = prof(label + "-h1.cpu.pprof")
				}
				r, err := runMGThroughput(ctx, c, o, o.mg.Clients, p)
				if err != nil {
					return err
				}
				r.Round = round
				rep.Throughput = append(rep.Throughput, *r)
				progress("[%s] %d clients: %.0f commits/s (p50 %.2f ms, p99 %.2f ms), leaders/host %v, %.0f WAL fsyncs/s/host, %.1f synced batches/fsync, %.1f commits/fsync, %.0f µs CPU/commit (+broker %.0f), %.2f frames/commit, machine %.0f%% busy (%.2f cores outside the bench), loadgen %.2f CPU-s, %d errors",
					label, r.Clients, r.CommitsPerSec, r.P50Ms, r.P99Ms, r.LeadersPerHost, r.WALFsyncsPerSec, r.SyncedPerFsync, r.CommitsPerFsync,
					r.CPUPerCommitUs, r.CPUPerCommitAll, r.FramesPerCommit, 100*r.MachineBusy, r.OtherCPU, r.LoadGenCPU, r.Errors)
				return nil
			}); err != nil {
				return rep, err
			}
		}
	}
	var one, many []float64
	for _, t := range rep.Throughput {
		if t.Groups == 1 {
			one = append(one, t.CommitsPerSec)
		} else {
			many = append(many, t.CommitsPerSec)
		}
	}
	rep.CommitsPerSec1, rep.CommitsPerSecMany = median(one), median(many)
	if rep.CommitsPerSec1 > 0 && o.mg.Many != 1 {
		rep.Ratio = rep.CommitsPerSecMany / rep.CommitsPerSec1
	}
	if o.mg.Total <= 0 {
		rep.Goals = mgGoals(rep)
		return rep, nil
	}

	// 2 and 3. Idle cost (against hosts with no group), then frames.
	idle := func(label string, n int, metrics bool, then func(*mgCluster) error) error {
		return run(label, n, metrics, func(c *mgCluster, t0 time.Time) error {
			p := ""
			if n == o.mg.Total {
				p = prof(label + "-h1-idle")
			}
			r, err := measureIdle(ctx, c, o, metrics, t0, p)
			if err != nil {
				return err
			}
			rep.Idle = append(rep.Idle, *r)
			progress("[%s] start %.1fs, leaders %.1fs, quiescent %.1fs; idle CPU %% of a core per host %s (broker %.2f%%), frames/s %s, heap MiB %s, stacks MiB %s, RSS MiB %s, goroutines %v, metric series %d",
				label, r.StartSeconds, r.LeadersSeconds, r.QuiesceSeconds, fmtFloats(r.CPUPercent, "%.2f"), r.BrokerPercent,
				fmtFloats(r.FramesPerSec, "%.1f"), fmtMiB(r.HeapInuse), fmtMiB(r.StackInuse), fmtMiBi(r.RSS), r.Goroutines, r.MetricSeries)
			if then != nil {
				return then(c)
			}
			return nil
		})
	}
	frames := func(c *mgCluster, ks []int) error {
		for _, k := range ks {
			if k > c.groups {
				continue
			}
			p := ""
			if k == slices.Max(ks) && k > 0 {
				p = prof(fmt.Sprintf("mg-frames-%d-k%d-h1.cpu.pprof", c.groups, k))
			}
			r, err := measureFrames(ctx, c, o, k, p)
			if err != nil {
				return err
			}
			rep.Frames = append(rep.Frames, *r)
			progress("[mg-frames-%d] %3d active groups x %.0f writes/s: %d writes (%d errors, mean %.1f ms, max %.0f ms), sent frames/s per host %s (payloads/s %s), CPU %% %s, quiescent %d -> %d of %d, %d leader changes",
				c.groups, k, r.Rate, r.Writes, r.Errors, r.PutMeanMs, r.PutMaxMs, fmtFloats(r.FramesPerSec, "%.0f"), fmtFloats(r.PayloadsPerSec, "%.0f"), fmtFloats(r.CPUPercent, "%.1f"),
				r.QuiescentBefore, r.QuiescentAfter, 3*c.groups, r.LeaderChanges)
		}
		return nil
	}
	if err := idle("mg-idle-0", 0, false, nil); err != nil {
		return rep, err
	}
	if err := idle(fmt.Sprintf("mg-idle-%d", o.mg.Total), o.mg.Total, false, func(c *mgCluster) error { return frames(c, o.mg.Active) }); err != nil {
		return rep, err
	}
	if o.mg.Compare > 0 && o.mg.Compare != o.mg.Total {
		cmp := []int{}
		for _, k := range o.mg.Active {
			if k <= 10 {
				cmp = append(cmp, k)
			}
		}
		if err := idle(fmt.Sprintf("mg-idle-%d", o.mg.Compare), o.mg.Compare, false, func(c *mgCluster) error { return frames(c, cmp) }); err != nil {
			return rep, err
		}
	}
	if o.mg.Metrics {
		if err := idle("mg-idle-0-metrics", 0, true, nil); err != nil {
			return rep, err
		}
		if err := idle(fmt.Sprintf("mg-idle-%d-metrics", o.mg.Total), o.mg.Total, true, nil); err != nil {
			return rep, err
		}
	}
	rep.HeapPerGroup, rep.RSSPerGroup = perGroup(rep.Idle, o.mg.Total, false)
	rep.HeapPerGroupMetrics, rep.RSSPerGroupMetrics = perGroup(rep.Idle, o.mg.Total, true)
	rep.Goals = mgGoals(rep)
	return rep, nil
}

func findIdle(idle []mgIdle, n int, metrics bool) *mgIdle {
	for i := range idle {
		if idle[i].Groups == n && idle[i].Metrics == metrics {
			return &idle[i]
		}
	}
	return nil
}

// perGroup is (mean over hosts with n groups - mean over hosts with none)/n.
func perGroup(idle []mgIdle, n int, metrics bool) (heap, rss float64) {
	a, b := findIdle(idle, n, metrics), findIdle(idle, 0, metrics)
	if a == nil || b == nil || n == 0 {
		return 0, 0
	}
	mean := func(xs []float64) float64 {
		var s float64
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	f := func(r *mgIdle) (h, s []float64) {
		for i := range r.HeapInuse {
			h = append(h, float64(r.HeapInuse[i]))
			s = append(s, float64(r.RSS[i]))
		}
		return h, s
	}
	ah, as := f(a)
	bh, bs := f(b)
	return (mean(ah) - mean(bh)) / float64(n), (mean(as) - mean(bs)) / float64(n)
}

func findFrames(fs []mgFrames, n, k int) *mgFrames {
	for i := range fs {
		if fs[i].Groups == n && fs[i].Active == k {
			return &fs[i]
		}
	}
	return nil
}

// mgGoals evaluates the three goals of section 6.
func mgGoals(rep *mgReport) []goal {
	var gs []goal
	o := rep.Options
	if rep.Ratio > 0 {
		gs = append(gs, goal{Name: fmt.Sprintf("groups: commits/s, %d groups / 1 group (%d clients, median of %d)", o.Many, o.Clients, max(1, o.Rounds)),
			Value: rep.Ratio, Target: ">= 5.00", Pass: rep.Ratio >= 5})
	}
	for _, metrics := range []bool{false, true} {
		r := findIdle(rep.Idle, o.Total, metrics)
		if r == nil {
			continue
		}
		tag := "metrics off"
		heap, rss := rep.HeapPerGroup, rep.RSSPerGroup
		if metrics {
			tag, heap, rss = "metrics on", rep.HeapPerGroupMetrics, rep.RSSPerGroupMetrics
		}
		cpu := slices.Max(r.CPUPercent)
		gs = append(gs,
			goal{Name: fmt.Sprintf("groups: idle CPU of %d groups, %% of a core, worst host (%s)", o.Total, tag), Value: cpu, Target: "< 5.00", Pass: cpu < 5},
			goal{Name: fmt.Sprintf("groups: heap KiB per idle group (%s)", tag), Value: heap / 1024, Target: "< 50.00", Pass: heap < 50<<10},
			goal{Name: fmt.Sprintf("groups: RSS KiB per idle group (%s)", tag), Value: rss / 1024, Target: "< 50.00", Pass: rss < 50<<10},
		)
	}
	// Frames grow with active groups: non-decreasing in k, and the same
	// at the same k whatever the total.
	var ks []float64
	for _, k := range o.Active {
		if f := findFrames(rep.Frames, o.Total, k); f != nil {
			ks = append(ks, f.MeanFrames)
		}
	}
	if len(ks) >= 2 {
		grows := ks[len(ks)-1] > ks[0]
		for i := 1; i < len(ks); i++ {
			if ks[i] < 0.9*ks[i-1] {
				grows = false
			}
		}
		v := ks[len(ks)-1] / max(ks[0], 1e-9)
		gs = append(gs, goal{Name: fmt.Sprintf("groups: frames/s grows with k, %d total (k=%d / k=%d)", o.Total, o.Active[len(o.Active)-1], o.Active[0]),
			Value: v, Target: "> 1, non-decreasing", Pass: grows})
	}
	for _, k := range []int{0, 10} {
		a, b := findFrames(rep.Frames, o.Total, k), findFrames(rep.Frames, o.Compare, k)
		if a == nil || b == nil || o.Compare == o.Total {
			continue
		}
		// One frame/s of slack: at k=0 only host pings remain.
		v := (a.MeanFrames + 1) / (b.MeanFrames + 1)
		gs = append(gs, goal{Name: fmt.Sprintf("groups: frames/s at k=%d, %d total / %d total", k, o.Total, o.Compare),
			Value: v, Target: "<= 1.25", Pass: v <= 1.25})
	}
	return gs
}

func fmtFloats(xs []float64, f string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(s, "/")
}

func fmtMiB(xs []uint64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.1f", float64(x)/(1<<20))
	}
	return strings.Join(s, "/")
}

func fmtMiBi(xs []int64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.1f", float64(x)/(1<<20))
	}
	return strings.Join(s, "/")
}

// printMultiGroup writes section 6's tables.
func printMultiGroup(w io.Writer, rep *mgReport) {
	if rep == nil {
		return
	}
	fmt.Fprintf(w, "\n6. many Raft groups per process: 3 host processes, one NATS server\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tgroups\tclients\tcommits/s\tp50 ms\tp99 ms\tfsyncs/s/host\tbatches/fsync\tcommits/fsync\tµs CPU/commit\t+broker\tframes/commit\tbusy\tother cores\terrors\t")
	for _, r := range rep.Throughput {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.1f\t%.1f\t%.0f\t%.0f\t%.2f\t%.0f%%\t%.2f\t%d\t\n", r.Round, r.Groups, r.Clients, r.CommitsPerSec, r.P50Ms, r.P99Ms,
			r.WALFsyncsPerSec, r.SyncedPerFsync, r.CommitsPerFsync, r.CPUPerCommitUs, r.CPUPerCommitAll, r.FramesPerCommit, 100*r.MachineBusy, r.OtherCPU, r.Errors)
	}
	tw.Flush()
	if rep.Ratio > 0 {
		fmt.Fprintf(w, "  medians: 1 group %.0f commits/s, %d groups %.0f commits/s, ratio x%.2f\n", rep.CommitsPerSec1, rep.Options.Many, rep.CommitsPerSecMany, rep.Ratio)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "groups/host\tmetrics\tstart s\tleaders s\tquiescent s\tidle CPU %/host\tframes/s/host\theap MiB/host\tRSS MiB/host\tgoroutines\t")
	for _, r := range rep.Idle {
		fmt.Fprintf(tw, "%d\t%v\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%v\t\n", r.Groups, r.Metrics, r.StartSeconds, r.LeadersSeconds, r.QuiesceSeconds,
			fmtFloats(r.CPUPercent, "%.2f"), fmtFloats(r.FramesPerSec, "%.1f"), fmtMiB(r.HeapInuse), fmtMiBi(r.RSS), r.Goroutines)
	}
	tw.Flush()
	fmt.Fprintf(w, "  per idle group (metrics off): heap %.1f KiB, RSS %.1f KiB", rep.HeapPerGroup/1024, rep.RSSPerGroup/1024)
	if rep.HeapPerGroupMetrics != 0 {
		fmt.Fprintf(w, "; metrics on: heap %.1f KiB, RSS %.1f KiB", rep.HeapPerGroupMetrics/1024, rep.RSSPerGroupMetrics/1024)
	}
	fmt.Fprintln(w)
	if len(rep.Frames) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "groups/host\tactive\twrites/s\tsent frames/s per host\tmean\tpayloads/s per host\tCPU %/host\t")
		for _, r := range rep.Frames {
			fmt.Fprintf(tw, "%d\t%d\t%.0f\t%s\t%.1f\t%s\t%s\t\n", r.Groups, r.Active, float64(r.Writes)/r.Seconds, fmtFloats(r.FramesPerSec, "%.1f"), r.MeanFrames,
				fmtFloats(r.PayloadsPerSec, "%.1f"), fmtFloats(r.CPUPercent, "%.1f"))
		}
		tw.Flush()
	}
}
