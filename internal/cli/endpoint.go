package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/membership"
)

func init() { commands = append(commands, newEndpointCmd) }

// maxStatusAnswers bounds the answers one status query collects: the
// subject is network input, and anyone allowed to answer could flood it.
const maxStatusAnswers = 256

// endpointFlags are shared by 'endpoint status' and 'endpoint health'.
type endpointFlags struct {
	nats     natsFlags
	cluster  string
	prefix   string
	writeOut string
	wait     time.Duration
	maxLag   uint64
	watch    bool
	interval time.Duration
}

func newEndpointCmd(g *globals) *cobra.Command {
	f := &endpointFlags{}
	cmd := &cobra.Command{
		Use:   "endpoint",
		Short: "Status and health of every running node (like 'etcdctl endpoint status/health --cluster')",
		Long: `Ask every running node of the cluster for its status over NATS (request/reply
on <prefix>.<cluster>.status) and show them side by side: 'endpoint status'
lists raft ID, name, incarnation, version, state, term, leader, commit,
applied, lag behind the leader, storage size, last snapshot, drops by reason
and peer round-trip time; 'endpoint health' judges them and exits with the
Nagios plugin codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

Fields a node does not report (an older raftbus) are shown as "-".`,
	}
	pf := cmd.PersistentFlags()
	f.nats.register(pf)
	pf.StringVar(&f.cluster, "cluster", "", "cluster ID; may be omitted when the NATS account holds one raftbus cluster ($RAFTBUS_CLUSTER)")
	pf.StringVar(&f.prefix, "prefix", "raftbus", "NATS subject prefix ($RAFTBUS_PREFIX)")
	pf.StringVarP(&f.writeOut, "write-out", "w", "table", "output format: table or json")
	pf.DurationVar(&f.wait, "wait", time.Second, "how long to wait for the nodes' answers (less when every member answered)")
	pf.Uint64Var(&f.maxLag, "max-lag", 1000, "a node whose applied index is more than this many entries behind the leader's commit lags")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the status of every running node",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, _ []string) error { return endpointStatus(cmd.Context(), g, f) },
	}
	status.Flags().BoolVar(&f.watch, "watch", false, "refresh the table in place until interrupted (json: one object per line)")
	status.Flags().DurationVar(&f.interval, "interval", 2*time.Second, "refresh interval of --watch")
	health := &cobra.Command{
		Use:   "health",
		Short: "Judge the cluster's health; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
		Long: `Judge the cluster's health from the nodes' status answers and say why:

  CRITICAL (2)  no node answered; no leader; quorum lost (fewer than a
                majority of the voters answered); nodes at one term name
                different leaders
  WARNING  (1)  a member did not answer (quorum intact, but at risk when a
                voter is down); a node lags more than --max-lag entries;
                nodes disagree on the leader across terms; a node reports
                a membership problem; an incarnation answers that is not a
                member
  OK       (0)  otherwise
  UNKNOWN  (3)  the check could not run: bad arguments, NATS unreachable,
                credentials refused`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return withCode(HealthUnknown, fmt.Errorf("unexpected arguments %q", args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := endpointHealth(cmd.Context(), g, f)
			if err != nil && !errors.Is(err, errSilent) {
				// The check could not run: never mistake that for a verdict.
				return withCode(HealthUnknown, err)
			}
			return err
		},
	}
	health.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(HealthUnknown, err) })
	cmd.AddCommand(status, health)
	return cmd
}

func (f *endpointFlags) validate() error {
	switch f.writeOut {
	case "table", "json":
	default:
		return usageErr(fmt.Errorf("--write-out %q: use table or json", f.writeOut))
	}
	if f.wait <= 0 {
		return usageErr(fmt.Errorf("--wait must be positive, got %v", f.wait))
	}
	if f.watch && f.interval <= 0 {
		return usageErr(fmt.Errorf("--interval must be positive, got %v", f.interval))
	}
	return nil
}

// endpointConn is a connection to one cluster's status subject.
type endpointConn struct {
	nc *nats.Conn
	// denied is set when NATS reported a permission violation: then no
	// answer means "not allowed to ask", not "no node running".
	denied  atomic.Bool
	cluster uuid.UUID
	subject string
}

func (f *endpointFlags) open(ctx context.Context) (*endpointConn, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	c := &endpointConn{}
	if f.cluster != "" {
		var err error
		if c.cluster, err = uuid.Parse(f.cluster); err != nil {
			return nil, usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
		}
	}
	nc, err := f.nats.connectNotingDenials("raftbus-endpoint", &c.denied)
	if err != nil {
		return nil, err
	}
	c.nc = nc
	if f.cluster == "" {
		js, err := jetstream.New(nc)
		if err == nil {
			dctx, cancel := context.WithTimeout(ctx, f.nats.timeout)
			c.cluster, err = discoverCluster(dctx, js, f.prefix)
			cancel()
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
	}
	c.subject = membership.StatusSubject(f.prefix, c.cluster)
	return c, nil
}

// answer is one node's status answer and how long it took.
type answer struct {
	membership.NodeStatus
	took time.Duration
}

// query asks every node for its status. It returns when wait has passed,
// or earlier once every member named by the answers has answered.
func (c *endpointConn) query(ctx context.Context, wait time.Duration) ([]answer, error) {
	inbox := c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, classifyNATS(fmt.Errorf("status query: %w", err))
	}
	defer func() { _ = sub.Unsubscribe() }()
	start := time.Now()
	if err := c.nc.PublishRequest(c.subject, inbox, nil); err != nil {
		return nil, classifyNATS(fmt.Errorf("status query: %w", err))
	}
	// A flush surfaces a permission violation of the publish now.
	if err := c.nc.FlushTimeout(wait); err != nil {
		return nil, classifyNATS(fmt.Errorf("status query: %w", err))
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []answer
	for {
		select {
		case m := <-ch:
			var st membership.NodeStatus
			if json.Unmarshal(m.Data, &st) != nil || st.RaftID == 0 {
				continue // not an answer of a node: ignored, never fatal
			}
			out = append(out, answer{NodeStatus: st, took: time.Since(start)})
			if len(out) >= maxStatusAnswers || allAnswered(out) {
				return out, nil
			}
		case <-timer.C:
			if len(out) == 0 && c.denied.Load() {
				return nil, withCode(ExitPermission, fmt.Errorf("NATS denied the status query on %s (check the credentials' publish/subscribe permissions)", c.subject))
			}
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// allAnswered reports whether every member that the answers name has
// answered. Only members named by a node that reports its membership
// count; with none, the full wait is used.
func allAnswered(as []answer) bool {
	want := members(as)
	if len(want) == 0 {
		return false
	}
	for id := range want {
		if !slices.ContainsFunc(as, func(a answer) bool { return a.RaftID == id }) {
			return false
		}
	}
	return true
}

// members returns the membership the answers report, taken from the
// answer with the highest term and applied index (the most recent view),
// with true for voters.
func members(as []answer) map[membership.HexID]bool {
	var best *answer
	for i := range as {
		a := &as[i]
		if len(a.Voters) == 0 {
			continue
		}
		if best == nil || a.Term > best.Term || a.Term == best.Term && a.Applied > best.Applied {
			best = a
		}
	}
	if best == nil {
		return nil
	}
	m := map[membership.HexID]bool{}
	for _, id := range best.Voters {
		m[id] = true
	}
	for _, id := range best.Learners {
		m[id] = false
	}
	return m
}

// classifyNATS gives a failed NATS operation its exit code.
func classifyNATS(err error) error {
	switch {
	case errors.Is(err, nats.ErrPermissionViolation), errors.Is(err, nats.ErrAuthorization):
		return withCode(ExitPermission, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoServers):
		return withCode(ExitUnreachable, err)
	}
	return err
}
