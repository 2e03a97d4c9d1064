package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/raftbridge"
)

// scrape fetches url's /metrics and parses it.
func scrape(t *testing.T, url string) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	code, body := get(t, nil, url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return body, fams
}

func put(t *testing.T, s *Server, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := s.Node().Propose(ctx, kv.EncodePut(key, []byte(value))); err != nil {
		t.Fatal(err)
	}
}

// value returns the value of the series of fam whose labels include want
// (name=value pairs), and whether it exists.
func value(fams map[string]*dto.MetricFamily, fam string, want ...string) (float64, bool) {
	f := fams[fam]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// TestMetricsOfARunningCluster scrapes every node of a three-node cluster
// after some traffic and a snapshot, and checks what issue 11 found wrong:
// promlint finds nothing, the storage metrics are exported, the committed
// and applied counters are counters that match the indexes, every drop
// reason is there before any drop, no fault-injection reason exists, and
// the round-trip time and active peers are measured.
func TestMetricsOfARunningCluster(t *testing.T) {
	c := newTestCluster(t, 3, 3, func(cfg *Config) { cfg.Node.SnapshotEntries = 20 })
	lead := c.leader()
	for i := range 30 {
		put(t, lead, fmt.Sprintf("k%02d", i), "v")
	}
	// Heartbeats go out every tick; wait for the leader to have measured
	// every follower.
	testnats.Eventually(t, 10*time.Second, func() error {
		if n := len(lead.Node().TransportStats().PeerRTT); n != 2 {
			return fmt.Errorf("RTT measured to %d followers", n)
		}
		return nil
	})

	t.Logf("leader's heartbeat round trips: %v", lead.Node().TransportStats().PeerRTT)
	all := map[string]*dto.MetricFamily{}
	for _, s := range c.servers {
		body, fams := scrape(t, s.URL())
		for k, v := range fams {
			all[k] = v
		}
		problems, err := promlint.New(bytes.NewReader([]byte(body))).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: promlint: %s: %s", s.Identity().Name, p.Metric, p.Text)
		}
		if n, ok := value(fams, "raftbus_raftstore_wal_fsync_duration_seconds"); !ok || n == 0 {
			t.Errorf("%s: WAL fsync histogram: %v samples (exported %v)", s.Identity().Name, n, ok)
		}
		if _, ok := value(fams, "raftbus_raftstore_save_duration_seconds"); !ok {
			t.Errorf("%s: raftstore metrics not exported", s.Identity().Name)
		}
		if f := fams["raftbus_server_proposals_committed_total"]; f == nil || f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s: proposals_committed_total is %v, want a counter", s.Identity().Name, f.GetType())
		}
		// The applied counter is the applied index (it read 0 at index 7).
		applied, _ := value(fams, "raftbus_server_proposals_applied_total")
		if idx, _ := value(fams, "raftbus_server_applied_index"); applied != idx || applied < 30 {
			t.Errorf("%s: proposals_applied_total %v, applied_index %v", s.Identity().Name, applied, idx)
		}
		for _, r := range raftbridge.DropReasons {
			for _, fam := range []string{"raftbus_transport_dropped_messages_total", "raftbus_transport_dropped_envelopes_total"} {
				if _, ok := value(fams, fam, "reason", string(r)); !ok {
					t.Errorf("%s: %s{reason=%q} missing before any drop", s.Identity().Name, fam, r)
				}
			}
		}
		if strings.Contains(body, "fault_injected") {
			t.Errorf("%s: a production node exports the fault_injected reason", s.Identity().Name)
		}
		if n, _ := value(fams, "raftbus_server_snapshots_total"); n == 0 {
			t.Errorf("%s: no snapshot taken", s.Identity().Name)
		}
		if n, ok := value(fams, "raftbus_server_snapshot_duration_seconds"); !ok || n == 0 {
			t.Errorf("%s: snapshot duration not observed", s.Identity().Name)
		}
		if n, _ := value(fams, "raftbus_server_storage_size_bytes"); n <= 0 {
			t.Errorf("%s: storage size %v", s.Identity().Name, n)
		}
		if n, _ := value(fams, "raftbus_build_info"); n != 1 {
			t.Errorf("%s: build_info %v", s.Identity().Name, n)
		}
	}
	_, fams := scrape(t, lead.URL())
	for _, s := range c.servers {
		if s == lead {
			continue
		}
		if n, ok := value(fams, "raftbus_transport_peer_round_trip_time_seconds", "peer", fmt.Sprintf("%016x", s.Identity().RaftID)); !ok || n == 0 {
			t.Errorf("leader has no RTT samples for %s", s.Identity().Name)
		}
	}
	if n, _ := value(fams, "raftbus_transport_active_peers"); n != 2 {
		t.Errorf("leader's active peers %v, want 2", n)
	}
	if n, _ := value(fams, "raftbus_server_voters"); n != 3 {
		t.Errorf("voters %v, want 3", n)
	}
	t.Run("contrib", func(t *testing.T) { checkContrib(t, all) })
	t.Run("README", func(t *testing.T) {
		readme, err := os.ReadFile("../README.md")
		if err != nil {
			t.Fatal(err)
		}
		for name := range all {
			if strings.HasPrefix(name, "raftbus_") && !strings.Contains(string(readme), "| `"+name+"` |") {
				t.Errorf("%s is not in the README's metrics table", name)
			}
		}
	})
}
