package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// latencySummary is a latency distribution in microseconds.
type latencySummary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p99_9_us"`
	Max   int64   `json:"max_us"`
}

func summarize(h *hdrhistogram.Histogram) latencySummary {
	if h == nil || h.TotalCount() == 0 {
		return latencySummary{}
	}
	return latencySummary{
		Count: h.TotalCount(), Mean: h.Mean(),
		P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max(),
	}
}

// stepResult is one client count on one cluster run.
type stepResult struct {
	Transport     string  `json:"transport"`
	Round         int     `json:"round"`
	Clients       int     `json:"clients"`
	Commits       int64   `json:"commits"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"seconds"`
	CommitsPerSec float64 `json:"commits_per_sec"`
	// Latency is from the leader calling node.Propose to its return (the
	// entry committed and applied on the leader); RTT adds the client's
	// loopback round trip.
	Latency latencySummary `json:"latency_propose_to_applied"`
	RTT     latencySummary `json:"latency_client_rtt"`
	// CPU seconds in the measured window, per node and for the NATS
	// process (0 for rafthttp), and per 1,000 commits.
	NodeCPUSeconds   []float64 `json:"node_cpu_seconds"`
	BrokerCPUSeconds float64   `json:"broker_cpu_seconds"`
	CPUPer1kNodes    float64   `json:"cpu_seconds_per_1k_commits_nodes"`
	CPUPer1kTotal    float64   `json:"cpu_seconds_per_1k_commits_with_broker"`
	// LoadGenCPUSeconds is the parent's (load generator's) CPU in the
	// window; MachineBusy the share of all CPUs busy (from /proc/stat).
	LoadGenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
	MachineBusy       float64 `json:"machine_busy"`
	// LeaderSaves is what the leader's Ready loop asked of storage in the
	// window.
	LeaderSaves *saveStats `json:"leader_saves,omitempty"`
	// LeaderSaveBusy is the share of the window the leader's Ready loop
	// spent inside Save (its fsync duty cycle).
	LeaderSaveBusy float64 `json:"leader_save_busy"`
	FirstError     string  `json:"first_error,omitempty"`

	lat, rtt *hdrhistogram.Histogram
}

// clusterRun is one cluster, started fresh, with every client count.
type clusterRun struct {
	Transport          string        `json:"transport"`
	Round              int           `json:"round"`
	Leader             uint64        `json:"leader"`
	Steps              []*stepResult `json:"steps"`
	PeakRSSBytes       []int64       `json:"node_peak_rss_bytes"`
	BrokerPeakRSSBytes int64         `json:"broker_peak_rss_bytes"`
	Saves              []*saveStats  `json:"node_saves"`
	Error              string        `json:"error,omitempty"`
}

// clusterSummary aggregates one transport and client count over rounds:
// the median throughput (with min and max), latencies from the merged
// histograms, the median CPU cost and the largest peak RSS.
type clusterSummary struct {
	Transport        string         `json:"transport"`
	Clients          int            `json:"clients"`
	Rounds           int            `json:"rounds"`
	CommitsPerSec    float64        `json:"commits_per_sec_median"`
	CommitsPerSecMin float64        `json:"commits_per_sec_min"`
	CommitsPerSecMax float64        `json:"commits_per_sec_max"`
	Latency          latencySummary `json:"latency_propose_to_applied"`
	RTT              latencySummary `json:"latency_client_rtt"`
	CPUPer1kNodes    float64        `json:"cpu_seconds_per_1k_commits_nodes"`
	CPUPer1kTotal    float64        `json:"cpu_seconds_per_1k_commits_with_broker"`
	MachineBusy      float64        `json:"machine_busy_median"`
	// LeaderSavesPerCommit and LeaderSaveBusy are medians over rounds of the
	// leader's Save calls per commit and of its Ready loop's share of time
	// inside Save.
	LeaderSavesPerCommit float64 `json:"leader_saves_per_commit_median"`
	LeaderSaveBusy       float64 `json:"leader_save_busy_median"`
	PeakRSSMiB           float64 `json:"node_peak_rss_mib_max"`
	BrokerPeakRSSMiB     float64 `json:"broker_peak_rss_mib_max"`
	Errors               int64   `json:"errors"`
	// LatencyHistogram is the merged latency histogram (HdrHistogram V2,
	// compressed, base64), so that --replot can redraw the plot.
	LatencyHistogram string `json:"latency_histogram,omitempty"`

	lat *hdrhistogram.Histogram
}

// busSummary aggregates one entry size of the transport section.
type busSummary struct {
	EntrySize        int     `json:"entry_size"`
	PayloadBytes     int     `json:"payload_bytes"`
	BusMsgsPerSec    float64 `json:"bus_msgs_per_sec_median"`
	RawMsgsPerSec    float64 `json:"raw_msgs_per_sec_median"`
	BusMBPerSec      float64 `json:"bus_mb_per_sec_median"`
	RawMBPerSec      float64 `json:"raw_mb_per_sec_median"`
	Ratio            float64 `json:"bus_over_raw"`
	PayloadsPerFrame float64 `json:"bus_payloads_per_frame"`
}

// goal is one of the targets of the issue, evaluated on this run.
type goal struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Pass   bool    `json:"pass"`
}

// machineInfo describes where the run happened.
type machineInfo struct {
	Date     string `json:"date"`
	NumCPU   int    `json:"nproc"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	MemTotal string `json:"mem_total"`
}

func readMachine() machineInfo {
	m := machineInfo{Date: time.Now().UTC().Format(time.RFC3339), NumCPU: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && k == "MemTotal" {
				m.MemTotal = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarizeBus(results []*busResult) []busSummary {
	var out []busSummary
	for _, sz := range busSizes {
		var bus, raw, busMB, rawMB, ppf []float64
		s := busSummary{EntrySize: sz.size}
		for _, r := range results {
			if r.EntrySize != sz.size {
				continue
			}
			s.PayloadBytes = r.PayloadBytes
			if r.Kind == "bus" {
				bus, busMB, ppf = append(bus, r.MsgsPerSec), append(busMB, r.MBPerSec), append(ppf, r.PayloadsPerFrame)
			} else {
				raw, rawMB = append(raw, r.MsgsPerSec), append(rawMB, r.MBPerSec)
			}
		}
		if len(bus) == 0 && len(raw) == 0 {
			continue
		}
		s.BusMsgsPerSec, s.RawMsgsPerSec = median(bus), median(raw)
		s.BusMBPerSec, s.RawMBPerSec = median(busMB), median(rawMB)
		s.PayloadsPerFrame = median(ppf)
		if s.RawMsgsPerSec > 0 {
			s.Ratio = s.BusMsgsPerSec / s.RawMsgsPerSec
		}
		out = append(out, s)
	}
	return out
}

func summarizeClusters(runs []*clusterRun, transports []string, clients []int) []*clusterSummary {
	var out []*clusterSummary
	for _, tr := range transports {
		for _, c := range clients {
			s := &clusterSummary{Transport: tr, Clients: c, lat: newHist()}
			rtt := newHist()
			var tput, cpuN, cpuT, busy, spc, sbusy []float64
			for _, r := range runs {
				if r.Transport != tr {
					continue
				}
				for _, p := range r.PeakRSSBytes {
					s.PeakRSSMiB = max(s.PeakRSSMiB, float64(p)/(1<<20))
				}
				s.BrokerPeakRSSMiB = max(s.BrokerPeakRSSMiB, float64(r.BrokerPeakRSSBytes)/(1<<20))
				for _, st := range r.Steps {
					if st.Clients != c {
						continue
					}
					s.Rounds++
					tput = append(tput, st.CommitsPerSec)
					cpuN, cpuT = append(cpuN, st.CPUPer1kNodes), append(cpuT, st.CPUPer1kTotal)
					busy = append(busy, st.MachineBusy)
					if st.LeaderSaves != nil && st.Commits > 0 {
						spc = append(spc, float64(st.LeaderSaves.Saves)/float64(st.Commits))
						sbusy = append(sbusy, st.LeaderSaveBusy)
					}
					s.Errors += st.Errors
					if st.lat != nil {
						s.lat.Merge(st.lat)
					}
					if st.rtt != nil {
						rtt.Merge(st.rtt)
					}
				}
			}
			if s.Rounds == 0 {
				continue
			}
			s.CommitsPerSec = median(tput)
			s.CommitsPerSecMin, s.CommitsPerSecMax = slices.Min(tput), slices.Max(tput)
			s.CPUPer1kNodes, s.CPUPer1kTotal = median(cpuN), median(cpuT)
			s.MachineBusy = median(busy)
			s.LeaderSavesPerCommit, s.LeaderSaveBusy = median(spc), median(sbusy)
			s.Latency, s.RTT = summarize(s.lat), summarize(rtt)
			if b, err := s.lat.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err == nil {
				s.LatencyHistogram = string(b)
			}
			out = append(out, s)
		}
	}
	return out
}

func findSummary(sums []*clusterSummary, tr string, clients int) *clusterSummary {
	for _, s := range sums {
		if s.Transport == tr && s.Clients == clients {
			return s
		}
	}
	return nil
}

// evaluateGoals checks the targets against this run: those of the first
// benchmark issue (raftexample, the bus against raw NATS) and those of the
// performance issue, each a ratio of raftbus to rafthttp in the same run:
// on one NATS server commits/s >= 1.0 at 16 and 64 clients, p50 at 1
// client <= 1.10, CPU per commit with the broker <= 1.0 at 64 clients; on
// a 3-server NATS cluster commits/s >= 0.95 at 64 clients and p50 at 1
// client <= 1.25. A goal whose runs are missing is not reported.
func evaluateGoals(bus []busSummary, sums []*clusterSummary, clients []int, raftexample float64) []goal {
	var gs []goal
	hi, lo := slices.Max(clients), slices.Min(clients)
	if rb := findSummary(sums, transportRaftbus, hi); rb != nil {
		gs = append(gs, goal{
			Name:  fmt.Sprintf("raftbus commits/s at %d clients vs 2x raftexample (%.0f/s)", hi, raftexample),
			Value: rb.CommitsPerSec / (2 * raftexample), Target: ">= 1.0", Pass: rb.CommitsPerSec >= 2*raftexample,
		})
	}
	ratio := func(tr string, n int, of func(*clusterSummary) float64) (float64, bool) {
		a, b := findSummary(sums, tr, n), findSummary(sums, transportRafthttp, n)
		if a == nil || b == nil || of(b) <= 0 {
			return 0, false
		}
		return of(a) / of(b), true
	}
	commits := func(s *clusterSummary) float64 { return s.CommitsPerSec }
	p50 := func(s *clusterSummary) float64 { return float64(s.Latency.P50) }
	cpu := func(s *clusterSummary) float64 { return s.CPUPer1kTotal }
	type target struct {
		tr, topology string
		clients      int
		what         string
		of           func(*clusterSummary) float64
		limit        float64
		atMost       bool
	}
	// A run without both 16 and 64 clients judges its largest count
	// instead.
	both := slices.Contains(clients, 16) && slices.Contains(clients, 64)
	at := func(n int) int {
		if both {
			return n
		}
		return hi
	}
	targets := []target{
		{transportRaftbus, "one NATS server", at(16), "commits/s", commits, 1.0, false},
		{transportRaftbus, "one NATS server", at(64), "commits/s", commits, 1.0, false},
		{transportRaftbus, "one NATS server", lo, "p50 latency", p50, 1.10, true},
		{transportRaftbus, "one NATS server", at(64), "CPU per commit with the broker", cpu, 1.0, true},
		{transportNATS3, "3-server NATS cluster", at(64), "commits/s", commits, 0.95, false},
		{transportNATS3, "3-server NATS cluster", lo, "p50 latency", p50, 1.25, true},
	}
	if at(16) == at(64) {
		targets = slices.Delete(targets, 0, 1) // the same goal twice
	}
	for _, t := range targets {
		r, ok := ratio(t.tr, t.clients, t.of)
		if !ok {
			continue
		}
		g := goal{Name: fmt.Sprintf("%s: raftbus / rafthttp %s at %d client(s)", t.topology, t.what, t.clients), Value: r}
		if t.atMost {
			g.Target, g.Pass = fmt.Sprintf("<= %.2f", t.limit), r <= t.limit
		} else {
			g.Target, g.Pass = fmt.Sprintf(">= %.2f", t.limit), r >= t.limit
		}
		gs = append(gs, g)
	}
	for _, b := range bus {
		gs = append(gs, goal{Name: fmt.Sprintf("bus / raw NATS msgs/s, %d B entries", b.EntrySize), Value: b.Ratio, Target: ">= 0.8", Pass: b.Ratio >= 0.8})
	}
	return gs
}

func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

// printTables writes the human-readable report.
func printTables(w io.Writer, m machineInfo, bus []busSummary, ping []pingSummary, sums []*clusterSummary, goals []goal, rounds int, via string, fsync bool) {
	fmt.Fprintf(w, "\nmachine: %d CPUs, %s, Linux %s, %s, %s\n", m.NumCPU, m.CPUModel, m.Kernel, m.Go, m.Date)
	if len(bus) > 0 {
		fmt.Fprintf(w, "\n1. Transport: natsbus vs raw NATS, one embedded server, loopback, median of %d rounds\n\n", rounds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "entry B\tpayload B\tbus msgs/s\traw msgs/s\tbus/raw\tbus MB/s\traw MB/s\tpayloads/frame\t")
		for _, b := range bus {
			fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.0f\t%.2f\t%.1f\t%.1f\t%.1f\t\n", b.EntrySize, b.PayloadBytes, b.BusMsgsPerSec, b.RawMsgsPerSec, b.Ratio, b.BusMBPerSec, b.RawMBPerSec, b.PayloadsPerFrame)
		}
		tw.Flush()
	}
	if len(ping) > 0 {
		fmt.Fprintf(w, "\n   ping-pong (one payload in flight, A -> B -> A), round trip in µs over all rounds\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "entry B\tbus p50\traw p50\tbus p99\traw p99\tbus p99.9\traw p99.9\t")
		for _, p := range ping {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.EntrySize, p.Bus.P50, p.Raw.P50, p.Bus.P99, p.Raw.P99, p.Bus.P999, p.Raw.P999)
		}
		tw.Flush()
	}
	if len(sums) > 0 {
		lat := "propose->applied on the leader"
		if via == "http" {
			lat = "client HTTP PUT round trip"
		}
		sync := "fsync on"
		if !fsync {
			sync = "fsync OFF (--no-sync)"
		}
		fmt.Fprintf(w, "\n2. 3-node cluster, %s, %d rounds: commits/s median [min-max]; latency (ms, %s) from all rounds\n\n", sync, rounds, lat)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "transport\tclients\tcommits/s\tmin-max\tp50\tp99\tp99.9\tmax\tRTT p50\tCPU s/1k nodes\t+broker\tbusy\tSaves/commit\tin Save\tpeak RSS MiB node\tbroker\terrors\t")
		for _, s := range sums {
			l := s.Latency
			if via == "http" {
				l = s.RTT
			}
			broker := "-"
			if s.BrokerPeakRSSMiB > 0 {
				broker = fmt.Sprintf("%.0f", s.BrokerPeakRSSMiB)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f-%.0f\t%s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.0f%%\t%.2f\t%.0f%%\t%.0f\t%s\t%d\t\n",
				s.Transport, s.Clients, s.CommitsPerSec, s.CommitsPerSecMin, s.CommitsPerSecMax,
				ms(l.P50), ms(l.P99), ms(l.P999), ms(l.Max), ms(s.RTT.P50),
				s.CPUPer1kNodes, s.CPUPer1kTotal, 100*s.MachineBusy, s.LeaderSavesPerCommit, 100*s.LeaderSaveBusy,
				s.PeakRSSMiB, broker, s.Errors)
		}
		tw.Flush()
		// Ratios against rafthttp, per client count.
		var lines []string
		for _, s := range sums {
			if s.Transport == transportRafthttp {
				continue
			}
			if h := findSummary(sums, transportRafthttp, s.Clients); h != nil && h.CommitsPerSec > 0 && h.Latency.P50 > 0 {
				lines = append(lines, fmt.Sprintf("  %s/rafthttp at %2d clients: throughput x%.2f, p50 x%.2f, p99 x%.2f, CPU/commit (with broker) x%.2f",
					s.Transport, s.Clients, s.CommitsPerSec/h.CommitsPerSec,
					float64(s.Latency.P50)/float64(h.Latency.P50), float64(s.Latency.P99)/float64(max(h.Latency.P99, 1)),
					s.CPUPer1kTotal/max(h.CPUPer1kTotal, 1e-9)))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(w, "\nratios:\n%s\n", strings.Join(lines, "\n"))
		}
	}
	if len(goals) > 0 {
		fmt.Fprintf(w, "\ngoals:\n")
		for _, g := range goals {
			mark := "FAIL"
			if g.Pass {
				mark = "ok  "
			}
			fmt.Fprintf(w, "  [%s] %-62s %.2f (target %s)\n", mark, g.Name, g.Value, g.Target)
		}
	}
}

// pingSummary is the ping-pong latency of one entry size, bus and raw, as
// the median over rounds of each percentile.
type pingSummary struct {
	EntrySize int            `json:"entry_size"`
	Bus       latencySummary `json:"bus_rtt"`
	Raw       latencySummary `json:"raw_rtt"`
}

func summarizePing(results []*pingResult) []pingSummary {
	var out []pingSummary
	for _, sz := range busSizes {
		s := pingSummary{EntrySize: sz.size}
		var found bool
		for _, kind := range []string{"bus", "raw"} {
			var rs []latencySummary
			for _, r := range results {
				if r.EntrySize == sz.size && r.Kind == kind {
					rs = append(rs, r.RTT)
				}
			}
			if len(rs) == 0 {
				continue
			}
			found = true
			m := medianLatency(rs)
			if kind == "bus" {
				s.Bus = m
			} else {
				s.Raw = m
			}
		}
		if found {
			out = append(out, s)
		}
	}
	return out
}

// medianLatency takes the median of each percentile over rounds.
func medianLatency(rs []latencySummary) latencySummary {
	pick := func(f func(latencySummary) int64) int64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = float64(f(r))
		}
		return int64(median(xs))
	}
	var count int64
	for _, r := range rs {
		count += r.Count
	}
	return latencySummary{
		Count: count,
		P50:   pick(func(l latencySummary) int64 { return l.P50 }),
		P90:   pick(func(l latencySummary) int64 { return l.P90 }),
		P99:   pick(func(l latencySummary) int64 { return l.P99 }),
		P999:  pick(func(l latencySummary) int64 { return l.P999 }),
		Max:   pick(func(l latencySummary) int64 { return l.Max }),
	}
}
