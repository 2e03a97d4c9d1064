package cli

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
)

// applyLiveness sets the STATUS of 'member list' rows from evidence, not
// from the announcement alone (which a node writes once, when it starts,
// and which therefore said "started" forever after it died):
//
//   - alive: the incarnation answered the status query of this very
//     command; LAST SEEN is now.
//   - unreachable: it did not answer now; the age says when it last
//     announced itself (its last start).
//   - no answer (never announced): neither evidence exists; it may never
//     have started, or stopped before its announcement was recorded.
func applyLiveness(rows []listRow, live []membership.NodeStatus, now time.Time) {
	answered := make(map[uuid.UUID]bool, len(live))
	for _, st := range live {
		answered[st.Incarnation] = true
	}
	for i := range rows {
		r := &rows[i]
		switch {
		case answered[r.Incarnation]:
			t := now
			r.Status, r.LastSeen = "alive", &t
		case r.LastSeen != nil:
			r.Status = fmt.Sprintf("unreachable (no answer; last started %s ago)", age(now.Sub(*r.LastSeen)))
		default:
			r.Status = "no answer (never announced)"
		}
	}
}

// age renders a duration the way people read ages: 45s, 12m, 3h20m, 4d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// groupStatuses returns the status answers as they concern Raft group g:
// a node reports group 0 in its status and other groups under Groups, and
// one that does not report g (it runs no member of g, or predates groups)
// tells nothing about g's Raft IDs and leader. Liveness is the host's and
// is read from every answer.
func groupStatuses(live []membership.NodeStatus, g uint64) []membership.NodeStatus {
	var out []membership.NodeStatus
	for _, st := range live {
		if gs, ok := st.InGroup(g); ok {
			out = append(out, gs)
		}
	}
	return out
}
