package raftbridge

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricValue returns the value of the single counter or gauge c collects.
// (prometheus/testutil would do, but pulls in a module go.sum lacks.)
func metricValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	var out float64
	n := 0
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		switch {
		case pb.Counter != nil:
			out += pb.Counter.GetValue()
		case pb.Gauge != nil:
			out += pb.Gauge.GetValue()
		}
		n++
	}
	if n != 1 {
		t.Fatalf("collector yielded %d metrics, want 1", n)
	}
	return out
}

// gathered returns every metric family the registry gathers, by name.
func gathered(t testing.TB, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}
