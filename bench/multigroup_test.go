package main

import (
	"io"
	"slices"
	"testing"

	"github.com/raftbus/raftbus/kv"
)

func TestKeysByGroup(t *testing.T) {
	keys := keysByGroup(64, 8)
	if len(keys) != 64 {
		t.Fatalf("%d groups, want 64", len(keys))
	}
	for g, ks := range keys {
		if len(ks) != 8 {
			t.Fatalf("group %d: %d keys, want 8", g, len(ks))
		}
		for _, k := range ks {
			if kv.ShardOf(k, 64) != g {
				t.Fatalf("key %q is not in group %d", k, g)
			}
		}
	}
	if k := keysByGroup(1, 3); len(k) != 1 || len(k[0]) != 3 {
		t.Fatalf("one group: %v", k)
	}
}

func TestParallelDo(t *testing.T) {
	done := make([]bool, 100)
	if err := parallelDo(len(done), 7, func(i int) error { done[i] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(done, false) {
		t.Fatal("not every index ran")
	}
	if err := parallelDo(10, 3, func(i int) error {
		if i == 4 {
			return io.EOF
		}
		return nil
	}); err != io.EOF {
		t.Fatalf("err %v, want EOF", err)
	}
}

func TestMGFlags(t *testing.T) {
	o, err := parseFlags([]string{"--groups", "--groups-active", "0,5,50", "--groups-total", "200"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.mg.Enabled || o.mg.Total != 200 || !slices.Equal(o.mg.Active, []int{0, 5, 50}) || o.mg.Many != 64 || o.mg.Rounds != 3 {
		t.Fatalf("options %+v", o.mg)
	}
	if _, err := parseFlags([]string{"--groups-active", ""}, io.Discard); err == nil {
		t.Fatal("empty --groups-active accepted")
	}
}

func TestMGGoals(t *testing.T) {
	rep := &mgReport{
		Options: mgOptions{Total: 1000, Compare: 100, Many: 64, Clients: 64, Rounds: 1, Active: []int{0, 1, 10}},
		Ratio:   6,
		Idle: []mgIdle{
			{Groups: 0, HeapInuse: []uint64{1 << 20}, RSS: []int64{10 << 20}, CPUPercent: []float64{0.1}},
			{Groups: 1000, HeapInuse: []uint64{1<<20 + 1000*40<<10}, RSS: []int64{10<<20 + 1000*60<<10}, CPUPercent: []float64{2}},
		},
		Frames: []mgFrames{
			{Groups: 1000, Active: 0, MeanFrames: 7}, {Groups: 1000, Active: 1, MeanFrames: 27}, {Groups: 1000, Active: 10, MeanFrames: 200},
			{Groups: 100, Active: 0, MeanFrames: 7}, {Groups: 100, Active: 10, MeanFrames: 190},
		},
	}
	rep.HeapPerGroup, rep.RSSPerGroup = perGroup(rep.Idle, 1000, false)
	if rep.HeapPerGroup != 40<<10 || rep.RSSPerGroup != 60<<10 {
		t.Fatalf("per group: heap %v, RSS %v", rep.HeapPerGroup, rep.RSSPerGroup)
	}
	want := map[string]bool{
		"groups: commits/s, 64 groups / 1 group (64 clients, median of 1)":       true,
		"groups: idle CPU of 1000 groups, % of a core, worst host (metrics off)": true,
		"groups: heap KiB per idle group (metrics off)":                          true,
		"groups: RSS KiB per idle group (metrics off)":                           false,
		"groups: frames/s grows with k, 1000 total (k=10 / k=0)":                 true,
		"groups: frames/s at k=0, 1000 total / 100 total":                        true,
		"groups: frames/s at k=10, 1000 total / 100 total":                       true,
	}
	gs := mgGoals(rep)
	if len(gs) != len(want) {
		t.Fatalf("%d goals, want %d: %+v", len(gs), len(want), gs)
	}
	for _, g := range gs {
		pass, ok := want[g.Name]
		if !ok || pass != g.Pass {
			t.Errorf("goal %q pass %v (known %v, want %v)", g.Name, g.Pass, ok, pass)
		}
	}
}

// TestGroupsSmoke runs a tiny section 6 end to end: host children, leaders,
// quiescence, load, frames and the report.
func TestGroupsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns host processes")
	}
	o, err := parseFlags([]string{"--skip-bus", "--skip-cluster", "--skip-snapshot", "--groups", "--no-sync",
		"--groups-total", "20", "--groups-compare", "0", "--groups-many", "4", "--groups-rounds", "1", "--groups-clients", "4",
		"--groups-idle", "300ms", "--groups-frames-window", "300ms", "--groups-duration", "300ms", "--warmup", "100ms",
		"--groups-active", "0,2", "--groups-metrics=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := runMultiGroup(t.Context(), o, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Throughput) != 2 || rep.Throughput[0].Commits == 0 || rep.Throughput[1].Commits == 0 {
		t.Fatalf("throughput %+v", rep.Throughput)
	}
	if len(rep.Idle) != 2 || len(rep.Frames) != 2 || rep.Frames[1].Writes == 0 {
		t.Fatalf("idle %+v, frames %+v", rep.Idle, rep.Frames)
	}
	if len(rep.Goals) == 0 {
		t.Fatal("no goals")
	}
	printMultiGroup(io.Discard, rep)
}
