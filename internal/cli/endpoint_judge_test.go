package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// ans builds the status answer of node id in a cluster of voters 1..n.
func ans(id, leader membership.HexID, term, applied uint64, voters ...membership.HexID) answer {
	return answer{NodeStatus: membership.NodeStatus{RaftID: id, Incarnation: uuid.New(), Name: "n" + id.String()[15:],
		Leader: leader, Term: term, Applied: applied, Commit: applied, Voters: voters}, took: time.Millisecond}
}

// Every rule of 'endpoint health', one case each: the verdict, its code
// and the reason that names the cause.
func TestJudge(t *testing.T) {
	v3 := []membership.HexID{1, 2, 3}
	cases := []struct {
		name   string
		as     []answer
		code   int
		reason string
	}{
		{"healthy", []answer{ans(1, 1, 2, 10, v3...), ans(2, 1, 2, 10, v3...), ans(3, 1, 2, 10, v3...)}, HealthOK, ""},
		{"nobody answered", nil, HealthCritical, "no node of cluster"},
		{"no leader", []answer{ans(1, 0, 2, 10, v3...), ans(2, 0, 2, 10, v3...), ans(3, 0, 2, 10, v3...)}, HealthCritical, "no leader"},
		{"one voter down", []answer{ans(1, 1, 2, 10, v3...), ans(2, 1, 2, 10, v3...)}, HealthWarning, "quorum at risk"},
		{"one voter down names it", []answer{ans(1, 1, 2, 10, v3...), ans(2, 1, 2, 10, v3...)}, HealthWarning, "voter 0000000000000003 did not answer"},
		{"quorum lost", []answer{ans(1, 0, 2, 10, v3...)}, HealthCritical, "quorum lost: 1 of 3 voters answered, 2 needed"},
		{"lagging", []answer{ans(1, 1, 2, 5000, v3...), ans(2, 1, 2, 5000, v3...), ans(3, 1, 2, 10, v3...)}, HealthWarning, "lags 4990 entries"},
		{"two leaders at one term", []answer{ans(1, 1, 2, 10, v3...), ans(2, 2, 2, 10, v3...), ans(3, 1, 2, 10, v3...)}, HealthCritical, "2 different leaders at term 2"},
		{"election under way", []answer{ans(1, 1, 2, 10, v3...), ans(2, 1, 2, 10, v3...), ans(3, 2, 3, 10, v3...)}, HealthWarning, "disagree"},
		{"removed incarnation answers", []answer{ans(1, 1, 2, 10, v3...), ans(2, 1, 2, 10, v3...), ans(3, 1, 2, 10, v3...), ans(4, 1, 2, 10)}, HealthWarning, "not a member"},
		{"older nodes report no membership", []answer{ans(1, 1, 2, 10), ans(2, 1, 2, 10)}, HealthWarning, "no node reports the membership"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := judge(buildView(uuid.New(), c.as), 1000)
			if h.Code != c.code || !strings.Contains(strings.Join(h.Reasons, "; "), c.reason) {
				t.Fatalf("code %d (%s), reasons %q; want %d with %q", h.Code, h.Status, h.Reasons, c.code, c.reason)
			}
			if !strings.HasPrefix(h.summary(), map[int]string{0: "OK", 1: "WARNING", 2: "CRITICAL"}[c.code]) {
				t.Fatalf("summary %q", h.summary())
			}
		})
	}
}

// A member that did not answer gets a row that says so; lag is measured
// against the leader's commit.
func TestBuildView(t *testing.T) {
	v := buildView(uuid.New(), []answer{ans(1, 1, 2, 100, 1, 2, 3), ans(2, 1, 2, 40, 1, 2, 3)})
	if len(v.Nodes) != 3 || v.Nodes[2].ID != 3 || v.Nodes[2].Reachable || v.Nodes[2].Role != "voter" {
		t.Fatalf("rows %+v", v.Nodes)
	}
	if v.Nodes[1].Lag == nil || *v.Nodes[1].Lag != 60 {
		t.Fatalf("lag of n2: %v", v.Nodes[1].Lag)
	}
	var b strings.Builder
	if err := writeStatusTable(&b, v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "no answer") || !strings.Contains(b.String(), "LAG") {
		t.Fatalf("table:\n%s", b.String())
	}
}

// Liveness comes from the status answer of this very query, not from the
// announcement a node wrote when it started.
func TestApplyLiveness(t *testing.T) {
	now := time.Now()
	started := now.Add(-3 * time.Hour)
	alive, dead, never := uuid.New(), uuid.New(), uuid.New()
	rows := []listRow{
		{Incarnation: alive, Status: "started", LastSeen: &started},
		{Incarnation: dead, Status: "started", LastSeen: &started},
		{Incarnation: never, Status: "unstarted"},
	}
	applyLiveness(rows, []membership.NodeStatus{{Incarnation: alive}}, now)
	if rows[0].Status != "alive" || !rows[0].LastSeen.Equal(now) {
		t.Fatalf("alive row %+v", rows[0])
	}
	if rows[1].Status != "unreachable (no answer; last started 3h00m ago)" {
		t.Fatalf("dead row %q", rows[1].Status)
	}
	if rows[2].Status != "no answer (never announced)" {
		t.Fatalf("never started %q", rows[2].Status)
	}
}
