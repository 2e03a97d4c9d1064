package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/raftbus/raftbus/membership"
)

// healthReport is the verdict of 'endpoint health'.
type healthReport struct {
	Status  string   `json:"status"` // OK, WARNING, CRITICAL
	Code    int      `json:"code"`
	Reasons []string `json:"reasons,omitempty"`
	// MaxLag is the --max-lag the verdict used.
	MaxLag uint64 `json:"max_lag"`
	endpointView
}

// judge applies the rules documented on 'endpoint health'.
func judge(v endpointView, maxLag uint64) healthReport {
	h := healthReport{endpointView: v, Code: HealthOK, MaxLag: maxLag}
	raise := func(code int, format string, args ...any) {
		h.Code = max(h.Code, code)
		h.Reasons = append(h.Reasons, fmt.Sprintf(format, args...))
	}
	answered := 0
	for _, r := range v.Nodes {
		if r.Reachable {
			answered++
		}
	}
	if answered == 0 {
		raise(HealthCritical, "no node of cluster %s answered", v.Cluster)
		return h.finish()
	}
	if v.Leader == 0 {
		raise(HealthCritical, "no leader: no node knows one")
	}
	// Two leaders named at one term break Raft's election safety.
	leadersAt := map[uint64]map[membership.HexID]bool{}
	for _, r := range v.Nodes {
		if r.Reachable && r.Leader != 0 {
			if leadersAt[r.Term] == nil {
				leadersAt[r.Term] = map[membership.HexID]bool{}
			}
			leadersAt[r.Term][r.Leader] = true
		}
	}
	for term, ls := range leadersAt {
		if len(ls) > 1 {
			raise(HealthCritical, "nodes name %d different leaders at term %d", len(ls), term)
		}
	}
	if len(leadersAt) > 1 {
		raise(HealthWarning, "nodes disagree on the term and leader (an election may be under way)")
	}
	if v.membersKnown {
		up, down := 0, []string{}
		for _, r := range v.Nodes {
			switch {
			case r.Role == "voter" && r.Reachable:
				up++
			case !r.Reachable:
				down = append(down, fmt.Sprintf("%s %s", r.Role, r.ID))
			}
		}
		quorum := v.voters/2 + 1
		switch {
		case up < quorum:
			raise(HealthCritical, "quorum lost: %d of %d voters answered, %d needed", up, v.voters, quorum)
		case up == quorum && len(down) > 0 && v.voters > 1:
			raise(HealthWarning, "quorum at risk: %d of %d voters answered; losing one more loses quorum", up, v.voters)
		}
		if len(down) > 0 {
			raise(HealthWarning, "unreachable: %s did not answer", strings.Join(down, ", "))
		}
	} else {
		raise(HealthWarning, "no node reports the membership (an older raftbus?): members that did not answer cannot be named")
	}
	for _, r := range v.Nodes {
		if !r.Reachable {
			continue
		}
		name := r.ID.String()
		if r.Name != "" {
			name = r.Name + " (" + name + ")"
		}
		if r.Lag != nil && *r.Lag > maxLag {
			raise(HealthWarning, "%s lags %d entries behind the leader (more than --max-lag %d)", name, *r.Lag, maxLag)
		}
		if r.Problem != "" {
			raise(HealthWarning, "%s reports a membership problem: %s", name, r.Problem)
		}
		if r.Role == "not a member" {
			raise(HealthWarning, "%s (incarnation %s) answers but is not a member: a removed node still running?", name, r.Incarnation)
		}
	}
	return h.finish()
}

func (h healthReport) finish() healthReport {
	h.Status = map[int]string{HealthOK: "OK", HealthWarning: "WARNING", HealthCritical: "CRITICAL"}[h.Code]
	return h
}

// summary is the first line of the report, as monitoring systems show it.
func (h healthReport) summary() string {
	if h.Code == HealthOK {
		up := 0
		for _, r := range h.Nodes {
			if r.Reachable {
				up++
			}
		}
		return fmt.Sprintf("OK: cluster %s is healthy: leader %s at term %d, %d of %d nodes answered", h.Cluster, h.Leader, h.Term, up, len(h.Nodes))
	}
	return fmt.Sprintf("%s: cluster %s: %s", h.Status, h.Cluster, strings.Join(h.Reasons, "; "))
}

func endpointHealth(ctx context.Context, g *globals, f *endpointFlags) error {
	c, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	as, err := c.query(ctx, f.wait)
	if err != nil {
		return err
	}
	h := judge(buildView(c.cluster, as), f.maxLag)
	if f.writeOut == "json" {
		err = writeJSON(g.stdout, h)
	} else {
		err = writeHealthTable(g.stdout, h)
	}
	if err != nil {
		return err
	}
	if h.Code != HealthOK {
		// The reasons are printed already; the error only carries the code.
		return withCode(h.Code, errSilent)
	}
	return nil
}

func writeHealthTable(w io.Writer, h healthReport) error {
	fmt.Fprintln(w, h.summary())
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tHEALTHY\tTERM\tLEADER\tLAG\tANSWER")
	for _, r := range h.Nodes {
		if !r.Reachable {
			fmt.Fprintf(tw, "%s\t%s\t%s\tfalse\t-\t-\t-\tno answer\n", r.ID, dash(r.Name), r.Role)
			continue
		}
		lag, lead := r.lagAndLeader()
		healthy := r.Leader != 0 && r.Problem == "" && r.Role != "not a member" && (r.Lag == nil || *r.Lag <= h.MaxLag)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%s\t%.1fms\n", r.ID, dash(r.Name), r.Role, healthy, r.Term, lead, lag, r.AnswerMillis)
	}
	return tw.Flush()
}

// writeJSONLine writes v as one line of JSON (for --watch).
func writeJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
