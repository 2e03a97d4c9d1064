package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// endpointRow is one node in 'endpoint status' and 'endpoint health'. A
// member that did not answer has a row too, with Reachable false.
type endpointRow struct {
	ID          membership.HexID `json:"raft_id"`
	Name        string           `json:"name,omitempty"`
	Incarnation uuid.UUID        `json:"incarnation,omitzero"`
	Role        string           `json:"role"` // voter, learner, or "not a member"
	Reachable   bool             `json:"reachable"`
	// AnswerMillis is how long its status answer took: liveness evidence.
	AnswerMillis  float64            `json:"answer_ms,omitempty"`
	Version       string             `json:"version,omitempty"`
	State         string             `json:"state,omitempty"`
	Term          uint64             `json:"term,omitempty"`
	Leader        membership.HexID   `json:"leader,omitempty"`
	Commit        uint64             `json:"commit_index,omitempty"`
	Applied       uint64             `json:"applied_index,omitempty"`
	Lag           *uint64            `json:"lag,omitempty"`
	StorageBytes  int64              `json:"storage_bytes,omitempty"`
	SnapshotIndex uint64             `json:"snapshot_index,omitempty"`
	Dropped       map[string]uint64  `json:"transport_dropped,omitempty"`
	PeerRTT       map[string]float64 `json:"peer_rtt_seconds,omitempty"`
	ClientURL     string             `json:"client_url,omitempty"`
	Problem       string             `json:"membership_problem,omitempty"`
}

// endpointView is the cluster as the answers show it.
type endpointView struct {
	Cluster uuid.UUID        `json:"cluster"`
	Leader  membership.HexID `json:"leader,omitempty"`
	Term    uint64           `json:"term,omitempty"`
	Nodes   []endpointRow    `json:"nodes"`
	// membersKnown says some node reported the membership, so that
	// members that did not answer are listed.
	membersKnown bool
	voters       int
}

// buildView turns the answers into rows: one per answering incarnation,
// plus one per member that did not answer.
func buildView(cluster uuid.UUID, as []answer) endpointView {
	v := endpointView{Cluster: cluster}
	mem := members(as)
	v.membersKnown = mem != nil
	for _, voter := range mem {
		if voter {
			v.voters++
		}
	}
	// The leader is the one named at the highest term.
	for _, a := range as {
		if a.Leader != 0 && a.Term >= v.Term {
			v.Leader, v.Term = a.Leader, a.Term
		}
	}
	var leaderCommit uint64
	haveLeader := false
	for _, a := range as {
		if a.RaftID == v.Leader && a.Leader == v.Leader {
			leaderCommit, haveLeader = max(a.Commit, a.Applied), true
		}
	}
	seen := map[membership.HexID]bool{}
	for _, a := range as {
		r := endpointRow{ID: a.RaftID, Name: a.Name, Incarnation: a.Incarnation, Reachable: true,
			AnswerMillis: float64(a.took.Microseconds()) / 1000, Version: a.Version, State: a.State, Term: a.Term,
			Leader: a.Leader, Commit: a.Commit, Applied: a.Applied, StorageBytes: a.StorageBytes,
			SnapshotIndex: a.SnapshotIndex, Dropped: a.Dropped, PeerRTT: a.PeerRTT, ClientURL: a.ClientURL, Problem: a.Problem}
		r.Role = roleOf(mem, a.RaftID)
		if haveLeader {
			lag := uint64(0)
			if leaderCommit > a.Applied {
				lag = leaderCommit - a.Applied
			}
			r.Lag = &lag
		}
		seen[a.RaftID] = true
		v.Nodes = append(v.Nodes, r)
	}
	for id, voter := range mem {
		if !seen[id] {
			role := "learner"
			if voter {
				role = "voter"
			}
			v.Nodes = append(v.Nodes, endpointRow{ID: id, Role: role})
		}
	}
	slices.SortStableFunc(v.Nodes, func(a, b endpointRow) int {
		if a.ID != b.ID {
			return cmp.Compare(a.ID, b.ID)
		}
		return strings.Compare(a.Incarnation.String(), b.Incarnation.String())
	})
	return v
}

func roleOf(mem map[membership.HexID]bool, id membership.HexID) string {
	if mem == nil {
		return "-"
	}
	voter, ok := mem[id]
	switch {
	case !ok:
		return "not a member"
	case voter:
		return "voter"
	}
	return "learner"
}

func endpointStatus(ctx context.Context, g *globals, f *endpointFlags) error {
	c, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	for frame := 0; ; frame++ {
		as, err := c.query(ctx, f.wait)
		if err != nil {
			if f.watch && ctx.Err() != nil {
				return nil // interrupted: the normal end of --watch
			}
			return err
		}
		v := buildView(c.cluster, as)
		if f.writeOut == "json" {
			if f.watch {
				err = writeJSONLine(g.stdout, v)
			} else {
				err = writeJSON(g.stdout, v)
			}
		} else {
			if f.watch {
				// Home the cursor and clear the screen: the table refreshes
				// in place, as with watch(1).
				fmt.Fprint(g.stdout, "\x1b[H\x1b[2J")
				fmt.Fprintf(g.stdout, "%s  every %v  (Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly), f.interval)
			}
			err = writeStatusTable(g.stdout, v)
		}
		if err != nil {
			return err
		}
		if !f.watch {
			if len(as) == 0 {
				return withCode(ExitUnreachable, fmt.Errorf("no node of cluster %s answered on %s within %v", c.cluster, c.subject, f.wait))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.interval):
		}
	}
}

// lagAndLeader formats a row's lag and leader for a table, "-" if unknown.
func (r endpointRow) lagAndLeader() (lag, lead string) {
	lag, lead = "-", "-"
	if r.Lag != nil {
		lag = fmt.Sprint(*r.Lag)
	}
	if r.Leader != 0 {
		lead = r.Leader.String()
	}
	return lag, lead
}

func writeStatusTable(w io.Writer, v endpointView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tINCARNATION\tROLE\tVERSION\tSTATE\tTERM\tLEADER\tCOMMIT\tAPPLIED\tLAG\tSTORAGE\tSNAPSHOT\tDROPS\tPEER RTT\tANSWER")
	for _, r := range v.Nodes {
		if !r.Reachable {
			fmt.Fprintf(tw, "%s\t%s\t-\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tno answer\n", r.ID, dash(r.Name), r.Role)
			continue
		}
		lag, lead := r.lagAndLeader()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.1fms\n",
			r.ID, dash(r.Name), r.Incarnation, r.Role, dash(r.Version), dash(strings.TrimPrefix(r.State, "State")), r.Term, lead,
			dashNum(r.Commit), r.Applied, lag, bytesOrDash(r.StorageBytes), dashNum(r.SnapshotIndex),
			dropsText(r.Dropped), rttText(r.PeerRTT), r.AnswerMillis)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashNum(n uint64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func bytesOrDash(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n < 1<<10:
		return fmt.Sprintf("%dB", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
}

// dropsText lists the non-zero drop counts, by reason.
func dropsText(d map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if d[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, d[k]))
		}
	}
	if len(parts) == 0 {
		if d == nil {
			return "-"
		}
		return "0"
	}
	return strings.Join(parts, ",")
}

// rttText shows the slowest peer's round trip.
func rttText(rtt map[string]float64) string {
	if len(rtt) == 0 {
		return "-"
	}
	slowest, at := 0.0, ""
	for _, k := range slices.Sorted(maps.Keys(rtt)) {
		if rtt[k] >= slowest {
			slowest, at = rtt[k], k
		}
	}
	return fmt.Sprintf("max %v (%s)", time.Duration(slowest*float64(time.Second)).Round(10*time.Microsecond), at)
}
