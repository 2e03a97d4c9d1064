package server

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

var metricRef = regexp.MustCompile(`\braftbus_[a-z0-9_]+`)

// exportedName maps a name a query uses to the family that exports it: a
// histogram's _bucket, _sum and _count series belong to the histogram.
func exportedName(fams map[string]*dto.MetricFamily, ref string) (string, bool) {
	if _, ok := fams[ref]; ok {
		return ref, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(ref, suf); ok {
			if f := fams[base]; f != nil && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
				return base, true
			}
		}
	}
	return "", false
}

// checkContrib asserts that every raftbus metric the dashboard and the
// alerting rules in contrib/ reference is exported (fams is the union of
// what the nodes of a running cluster export), and that both files have
// the shape their consumers expect.
func checkContrib(t *testing.T, fams map[string]*dto.MetricFamily) {
	dash, err := os.ReadFile("../contrib/grafana/raftbus-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no title or no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("dashboard panel %q has an empty query", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}

	rules, err := os.ReadFile("../contrib/prometheus/raftbus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The rules file is checked line by line (the module has no YAML
	// parser): every alert has an expression, a severity and a summary.
	var alert string
	seen := map[string]map[string]bool{}
	for _, line := range strings.Split(string(rules), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if name, ok := strings.CutPrefix(trimmed, "- alert: "); ok {
			alert = name
			seen[alert] = map[string]bool{}
			continue
		}
		for _, k := range []string{"expr:", "severity:", "summary:"} {
			if alert != "" && strings.HasPrefix(trimmed, k) {
				seen[alert][k] = true
			}
		}
		exprs = append(exprs, line)
	}
	want := []string{"RaftbusNoLeader", "RaftbusQuorumAtRisk", "RaftbusTransportDrops", "RaftbusSlowFsync",
		"RaftbusHighPeerRoundTrip", "RaftbusSnapshotFailures", "RaftbusLaggingFollower"}
	for _, a := range want {
		if seen[a] == nil {
			t.Errorf("alerting rules lack %s", a)
		}
	}
	for a, keys := range seen {
		for _, k := range []string{"expr:", "severity:", "summary:"} {
			if !keys[k] {
				t.Errorf("alert %s has no %s", a, k)
			}
		}
	}

	refs := map[string]bool{}
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			refs[ref] = true
		}
	}
	if len(refs) < 20 {
		t.Errorf("only %d metrics referenced: %v", len(refs), refs)
	}
	for ref := range refs {
		if _, ok := exportedName(fams, ref); !ok {
			t.Errorf("contrib/ references %s, which no running node exports", ref)
		}
	}
}
