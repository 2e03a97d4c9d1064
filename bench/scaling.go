package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
)

// scalingRow is one cell of the cost-as-work-grows table: one transport,
// cluster size and value size, at the largest client count of the run.
type scalingRow struct {
	Transport     string  `json:"transport"`
	Nodes         int     `json:"nodes"`
	ValueSize     int     `json:"value_size"`
	Clients       int     `json:"clients"`
	CommitsPerSec float64 `json:"commits_per_sec"`
	// CPUPerCommitUs is the CPU of every node process and the broker per
	// commit, in microseconds.
	CPUPerCommitUs float64 `json:"cpu_us_per_commit_with_broker"`
	P50Ms          float64 `json:"p50_ms"`
}

// scalingNodes and scalingValues are the grid of --scaling.
var (
	scalingNodes  = []int{3, 5, 7}
	scalingValues = []int{128, 1 << 10, 16 << 10}
)

// runScaling measures raftbus and rafthttp over the grid of cluster sizes
// and value sizes, one fresh cluster per cell, at the run's largest client
// count only (one round: the table shows how cost grows, the headline
// rounds show the ratios).
func runScaling(ctx context.Context, o *options, root string, progress func(string, ...any)) ([]scalingRow, error) {
	var rows []scalingRow
	clients := o.clients[len(o.clients)-1]
	for _, nodes := range scalingNodes {
		for _, size := range scalingValues {
			for _, tr := range []string{transportRaftbus, transportRafthttp} {
				cell := *o
				cell.nodes, cell.valueSize, cell.clients, cell.profileDir = nodes, size, []int{clients}, ""
				label := fmt.Sprintf("scale-%dn-%db", nodes, size)
				cr, err := runClusterRound(ctx, &cell, filepath.Join(root, label), tr, 0, progress)
				if err != nil {
					return rows, fmt.Errorf("%s %s: %w", label, tr, err)
				}
				sum := summarizeClusters([]*clusterRun{cr}, []string{tr}, []int{clients})
				s := findSummary(sum, tr, clients)
				if s == nil {
					return rows, fmt.Errorf("%s %s: no result", label, tr)
				}
				rows = append(rows, scalingRow{Transport: tr, Nodes: nodes, ValueSize: size, Clients: clients,
					CommitsPerSec: s.CommitsPerSec, CPUPerCommitUs: s.CPUPer1kTotal * 1e3, P50Ms: float64(s.Latency.P50) / 1000})
				progress("[%s %s] %.0f commits/s, %.1f µs CPU per commit", label, tr, s.CommitsPerSec, s.CPUPer1kTotal*1e3)
			}
		}
	}
	return rows, nil
}

// printScaling writes the grid with raftbus and rafthttp side by side.
func printScaling(w io.Writer, rows []scalingRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\ncost as work grows (%d clients, one round each, CPU of nodes and broker per commit):\n", rows[0].Clients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tvalue B\traftbus commits/s\trafthttp commits/s\tratio\traftbus µs CPU/commit\trafthttp µs CPU/commit\tratio\t")
	find := func(tr string, n, v int) *scalingRow {
		for i := range rows {
			if r := &rows[i]; r.Transport == tr && r.Nodes == n && r.ValueSize == v {
				return r
			}
		}
		return nil
	}
	for _, n := range scalingNodes {
		for _, v := range scalingValues {
			a, b := find(transportRaftbus, n, v), find(transportRafthttp, n, v)
			if a == nil || b == nil {
				continue
			}
			fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.0f\t%.2f\t%.1f\t%.1f\t%.2f\t\n", n, v, a.CommitsPerSec, b.CommitsPerSec,
				a.CommitsPerSec/b.CommitsPerSec, a.CPUPerCommitUs, b.CPUPerCommitUs, a.CPUPerCommitUs/b.CPUPerCommitUs)
		}
	}
	tw.Flush()
}
