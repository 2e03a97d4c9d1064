package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/raftbus/raftbus/membership"
)

// startCommand is the complete command that starts an announced node that
// is not running: every flag it needs, from its announcement (data
// directory, HTTP address) and this command's connection. Credentials are
// not repeated: a node authenticates with its data directory's key.
func startCommand(cluster, prefix, server string, a membership.AnnounceSeen) string {
	args := []string{"raftbus", "node", "--join", "--cluster", cluster, "--name", argQuote(a.Name)}
	data := a.DataDir
	if data == "" {
		data = "DIR"
	}
	args = append(args, "--data", argQuote(data))
	listen := "HOST:PORT"
	tls := false
	if u, err := url.Parse(a.ClientURL); err == nil && u.Host != "" {
		listen, tls = u.Host, u.Scheme == "https"
	}
	args = append(args, "--listen", listen)
	if tls {
		args = append(args, "--listen-tls-cert", "CERT.pem", "--listen-tls-key", "KEY.pem")
	}
	if prefix != "" && prefix != "raftbus" {
		args = append(args, "--prefix", argQuote(prefix))
	}
	if server == "" {
		server = "NATS_URL"
	}
	args = append(args, "-s", argQuote(server))
	return strings.Join(args, " ")
}

// argQuote quotes s for a POSIX shell when it needs it.
func argQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == ':' || r == ',' || r == '=' || r == '@' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// waitPromotion waits, within ctx, for the leader's automatic promotion
// of learner id (decided under membership.AutoPromoteID), printing the
// learner's progress against the leader's applied index to w.
func (s *session) waitPromotion(ctx context.Context, w io.Writer, d *membership.Directory, id membership.HexID, name string) (membership.Outcome, error) {
	type result struct {
		o   membership.Outcome
		err error
	}
	done := make(chan result, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		o, err := s.stream.WaitOutcome(wctx, membership.AutoPromoteID(id), d)
		done <- result{o, err}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := ""
	for {
		select {
		case r := <-done:
			if r.err != nil {
				if errors.Is(r.err, context.DeadlineExceeded) {
					return r.o, withCode(ExitTimeout, fmt.Errorf("learner %s (%s) was not promoted within --timeout; it stays a learner and the leader promotes it once it has caught up (watch 'raftbus member list')", id, name))
				}
				return r.o, s.classify(r.err)
			}
			if r.o.Status == membership.StatusRejected {
				return r.o, rejection(r.o)
			}
			return r.o, nil
		case <-tick.C:
			qctx, qcancel := context.WithTimeout(wctx, 500*time.Millisecond)
			sts, _ := membership.QueryStatus(qctx, s.nc, s.prefix, s.cluster, 400*time.Millisecond)
			qcancel()
			if line := progressLine(groupStatuses(sts, s.group), id, name); line != last {
				fmt.Fprintln(w, line)
				last = line
			}
		}
	}
}

// progressLine describes how far learner id is behind the leader.
func progressLine(sts []membership.NodeStatus, id membership.HexID, name string) string {
	var self, leader *membership.NodeStatus
	for i := range sts {
		if sts[i].RaftID == id {
			self = &sts[i]
		}
	}
	for i := range sts {
		if sts[i].RaftID != 0 && sts[i].RaftID == sts[i].Leader {
			leader = &sts[i]
		}
	}
	switch {
	case self == nil:
		return fmt.Sprintf("waiting for learner %s (%s) to start and catch up ...", id, name)
	case leader == nil:
		return fmt.Sprintf("learner %s (%s) has applied index %d; no leader answers status yet ...", id, name, self.Applied)
	}
	return fmt.Sprintf("learner %s (%s) has applied %d of the leader's %d; promoted once it has caught up ...", id, name, self.Applied, leader.Applied)
}
