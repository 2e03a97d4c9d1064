package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/raftbridge"
)

func init() { commands = append(commands, newMemberCmd) }

// memberFlags are shared by the member subcommands.
type memberFlags struct {
	nats     natsFlags
	cluster  string
	prefix   string
	writeOut string
	// groupArg is --group as given; group is its value once validated.
	groupArg string
	group    uint64
	learner  bool
	// autoPromote: add --learner --promote-when-caught-up.
	autoPromote bool
}

func newMemberCmd(g *globals) *cobra.Command {
	f := &memberFlags{}
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List and change cluster membership (add, remove, promote, list, history, stream repair)",
		Long: `Membership commands, in the style of 'etcdctl member'. They talk to the
cluster only through its JetStream membership stream: requests are recorded
there, the cluster leader turns them into Raft membership changes, and the
outcome and every committed change are recorded there too.

Exit codes: 0 ok, 1 failed, 2 bad arguments, 3 cluster unreachable,
4 precondition failed, 5 no such member, 6 last voter, 7 conflict with a
concurrent change, 8 permission denied, 9 timeout.

A node may run many Raft groups, each with its own membership (members,
Raft IDs, tombstones, requests, history) on the same stream. --group G
(default 0, the default group) picks the group every subcommand reads and
changes: 'member add --group 3 n4' adds the host that announced itself as
n4 to group 3 under a Raft ID of group 3, 'member remove --group 3'
removes and tombstones it in group 3 only, 'member list --group 3' and
'member history --group 3' show group 3 alone. Hosts announce themselves
once, for every group.`,
	}
	pf := cmd.PersistentFlags()
	f.nats.register(pf)
	pf.StringVar(&f.cluster, "cluster", envOr("RAFTBUS_CLUSTER", ""), "cluster ID; may be omitted when the NATS account holds one raftbus cluster ($RAFTBUS_CLUSTER)")
	pf.StringVar(&f.prefix, "prefix", envOr("RAFTBUS_PREFIX", "raftbus"), "NATS subject prefix ($RAFTBUS_PREFIX)")
	pf.StringVarP(&f.writeOut, "write-out", "w", "table", "output format: table or json")
	pf.StringVar(&f.groupArg, "group", "0", "Raft group whose membership to read and change (0: the default group)")

	add := &cobra.Command{
		Use:   "add NAME [--learner]",
		Short: "Add the node that announced itself under NAME (started with 'raftbus node --join')",
		Args:  exactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return memberAdd(cmd.Context(), g, f, args[0]) },
	}
	add.Flags().BoolVar(&f.learner, "learner", false, "add as a non-voting learner (promote it later)")
	add.Flags().BoolVar(&f.autoPromote, "promote-when-caught-up", false, "with --learner: the leader promotes the learner by itself once its log has caught up; waits for that within --timeout, showing progress")
	change := func(use, short, op string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return memberChange(cmd.Context(), g, f, op, args[0])
			},
		}
	}
	remove := change("remove ID|NAME", "Remove a member; its Raft ID and incarnation are tombstoned forever", membership.OpRemove)
	promote := change("promote ID|NAME", "Promote a learner to a voting member", membership.OpPromote)
	list := &cobra.Command{
		Use:   "list",
		Short: "List members with role, status, leader and last seen",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, _ []string) error { return memberList(cmd.Context(), g, f) },
	}
	history := &cobra.Command{
		Use:   "history",
		Short: "Show every membership record: announcements, requests, outcomes, committed changes",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, _ []string) error { return memberHistory(cmd.Context(), g, f) },
	}
	cmd.AddCommand(add, remove, promote, list, history, newMemberStreamCmd(g, f))
	return cmd
}

// session is an open connection to a cluster's membership stream, for
// one Raft group.
type session struct {
	nc         *nats.Conn
	stream     *membership.Stream
	cluster    uuid.UUID
	group      uint64
	prefix     string
	permDenied atomic.Bool
}

func (f *memberFlags) validate() error {
	switch f.writeOut {
	case "table", "json":
	default:
		return usageErr(fmt.Errorf("--write-out %q: use table or json", f.writeOut))
	}
	g, err := parseGroup(f.groupArg)
	if err != nil {
		return usageErr(err)
	}
	f.group = g
	return nil
}

// parseGroup reads --group: a Raft group is a non-negative decimal
// integer (a uint64).
func parseGroup(arg string) (uint64, error) {
	g, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("--group %q: a Raft group is a number from 0 (the default group) to %d", arg, uint64(math.MaxUint64))
	}
	return g, nil
}

// where names the cluster, and the group when it is not the default one,
// for the commands' messages.
func (s *session) where() string {
	if s.group == 0 {
		return "cluster " + s.cluster.String()
	}
	return fmt.Sprintf("cluster %s, group %d", s.cluster, s.group)
}

// jsonResult adds the group to a JSON result when it is not the default
// one (group 0's output stays as it was).
func (s *session) jsonResult(res map[string]any) map[string]any {
	if s.group != 0 {
		res["group"] = s.group
	}
	return res
}

// open connects to NATS and to the cluster's membership stream.
func (f *memberFlags) open(ctx context.Context) (*session, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	s := &session{prefix: f.prefix, group: f.group}
	nc, err := f.nats.connectNotingDenials("raftbus-member", &s.permDenied)
	if err != nil {
		return nil, err
	}
	s.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, withCode(ExitUnreachable, err)
	}
	if f.cluster == "" {
		if s.cluster, err = discoverCluster(ctx, js, f.prefix); err != nil {
			nc.Close()
			return nil, s.classify(err)
		}
	} else if s.cluster, err = uuid.Parse(f.cluster); err != nil {
		nc.Close()
		return nil, usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
	}
	s.stream, err = membership.OpenStream(ctx, membership.StreamConfig{JS: js, Prefix: f.prefix, Cluster: s.cluster, Group: f.group})
	if err != nil {
		nc.Close()
		return nil, s.classify(err)
	}
	return s, nil
}

func (s *session) close() { s.nc.Close() }

// classify gives an error its exit code.
func (s *session) classify(err error) error {
	var ee *exitError
	switch {
	case err == nil || errors.As(err, &ee):
		return err
	case s.permDenied.Load() || errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return withCode(ExitPermission, fmt.Errorf("permission denied by NATS (check the credentials' publish/subscribe permissions): %w", err))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return withCode(ExitTimeout, err)
	case errors.Is(err, membership.ErrStreamMissing) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return withCode(ExitUnreachable, err)
	case errors.Is(err, membership.ErrConflict):
		return withCode(ExitConflict, err)
	}
	return err
}

func discoverCluster(ctx context.Context, js jetstream.JetStream, prefix string) (uuid.UUID, error) {
	head := strings.ReplaceAll(prefix, ".", "_") + "-members-"
	var found []uuid.UUID
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if rest, ok := strings.CutPrefix(name, head); ok {
			if id, err := uuid.Parse(rest); err == nil {
				found = append(found, id)
			}
		}
	}
	if err := names.Err(); err != nil {
		return uuid.Nil, fmt.Errorf("list streams: %w", err)
	}
	switch len(found) {
	case 0:
		return uuid.Nil, withCode(ExitUnreachable, fmt.Errorf("no raftbus cluster found on this NATS account (no %s* stream): pass --cluster", head))
	case 1:
		return found[0], nil
	}
	return uuid.Nil, usageErr(fmt.Errorf("%d raftbus clusters share this NATS account: pass --cluster (one of %v)", len(found), found))
}

// directory reads the stream and rebuilds the membership; an empty record
// of committed changes is an error, never "no members".
func (s *session) directory(ctx context.Context) (*membership.Directory, []membership.Record, error) {
	recs, err := s.stream.ReadAll(ctx)
	if err != nil {
		return nil, nil, s.classify(err)
	}
	d := membership.Rebuild(recs)
	if d.Version == 0 {
		// Ask the running nodes why: a recreated stream is reported by the
		// leader; otherwise the leader has not recorded the cluster yet.
		live, _ := membership.QueryStatus(ctx, s.nc, s.prefix, s.cluster, 500*time.Millisecond)
		for _, st := range groupStatuses(live, s.group) {
			if st.Problem != "" {
				return nil, nil, withCode(ExitPrecondition, fmt.Errorf("%w: %s; node %s reports: %s", membership.ErrEmpty, s.stream.Name(), st.Name, st.Problem))
			}
		}
		if s.group != 0 {
			return nil, nil, withCode(ExitPrecondition, fmt.Errorf("%w: %s holds no committed change of group %d (is the group's leader running? retry shortly)", membership.ErrEmpty, s.stream.Name(), s.group))
		}
		return nil, nil, withCode(ExitPrecondition, fmt.Errorf("%w: %s (the leader has not recorded the cluster yet; retry shortly)", membership.ErrEmpty, s.stream.Name()))
	}
	return d, recs, nil
}

func requester() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return who + "@" + host
}

// submit records a request and waits for its outcome, accepting only one
// signed by a member of d.
func (s *session) submit(ctx context.Context, d *membership.Directory, req membership.Request) (membership.Outcome, error) {
	last, err := s.stream.LastRequestSeq(ctx)
	if err != nil {
		return membership.Outcome{}, s.classify(err)
	}
	req.ID, req.By = uuid.NewString(), requester()
	if _, err := s.stream.Submit(ctx, req, last); err != nil {
		return membership.Outcome{}, s.classify(err)
	}
	out, err := s.stream.WaitOutcome(ctx, req.ID, d)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return out, withCode(ExitTimeout, fmt.Errorf("no outcome for request %s within --timeout: the cluster may have no leader; the request stays recorded and is applied when a leader processes it (check 'raftbus member list')", req.ID))
		}
		return out, s.classify(err)
	}
	if out.Status == membership.StatusRejected {
		return out, rejection(out)
	}
	return out, nil
}

func rejection(o membership.Outcome) error {
	err := fmt.Errorf("%w: %s", membership.ErrRejected, o.Reason)
	switch o.Code {
	case membership.CodeNoSuchMember:
		return withCode(ExitNoSuchMember, err)
	case membership.CodeLastVoter:
		return withCode(ExitLastVoter, err)
	case membership.CodeConflict:
		return withCode(ExitConflict, err)
	}
	return withCode(ExitPrecondition, err)
}

func (f *memberFlags) context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, f.nats.timeout)
}

// withDirectory opens the cluster's stream within --timeout, rebuilds the
// membership from it and runs fn.
func (f *memberFlags) withDirectory(ctx context.Context, fn func(context.Context, *session, *membership.Directory) error) error {
	ctx, cancel := f.context(ctx)
	defer cancel()
	s, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	d, _, err := s.directory(ctx)
	if err != nil {
		return err
	}
	return fn(ctx, s, d)
}

func memberAdd(ctx context.Context, g *globals, f *memberFlags, name string) error {
	return f.withDirectory(ctx, func(ctx context.Context, s *session, d *membership.Directory) error {
		return runAdd(ctx, g, f, s, d, name)
	})
}

func runAdd(ctx context.Context, g *globals, f *memberFlags, s *session, d *membership.Directory, name string) error {
	if m, ok := d.ByName(name); ok {
		return withCode(ExitPrecondition, fmt.Errorf("%s is already member %s (incarnation %s)", name, m.ID, m.Incarnation))
	}
	cand, ok := d.Candidate(name)
	if !ok {
		return withCode(ExitPrecondition, fmt.Errorf("no node named %q that is not a member of %s or removed from it has announced itself: start it first with 'raftbus node --join --cluster %s --name %s --data DIR -s NATS_URL'", name, s.cluster, s.cluster, name))
	}
	op := membership.OpAdd
	if f.learner {
		op = membership.OpAddLearner
	}
	if f.autoPromote && !f.learner {
		return usageErr(errors.New("--promote-when-caught-up needs --learner"))
	}
	// A host keeps one Raft ID in every group (the node runs every group
	// under the ID of its data directory, which group 0 assigned): in
	// another group it is added under that ID.
	var id membership.HexID
	if s.group != 0 {
		var err error
		if id, err = s.groupZeroID(ctx, cand.Incarnation, name); err != nil {
			return err
		}
	}
	// The key comes from the candidate's verified, self-signed announcement.
	out, err := s.submit(ctx, d, membership.Request{Op: op, Name: name, Incarnation: cand.Incarnation, ClientURL: cand.ClientURL,
		PublicKey: cand.PublicKey, ExpectVersion: d.Version, PromoteWhenCaughtUp: f.autoPromote, RaftID: id})
	if err != nil {
		return err
	}
	start := startCommand(s.cluster.String(), f.prefix, f.nats.server, cand)
	if n := s.groupCount(ctx); n > 1 {
		// A sharded cluster: the node must run every group.
		start += fmt.Sprintf(" --groups %d", n)
	}
	var promoted *membership.Outcome
	if f.autoPromote {
		if f.writeOut != "json" {
			fmt.Fprintf(g.stdout, "Member %s added as learner to %s: %s (incarnation %s)\nIf it is not running, start it with:\n  %s\n",
				out.RaftID, s.where(), name, cand.Incarnation, start)
		}
		o, err := s.waitPromotion(ctx, g.stderr, d, out.RaftID, name)
		if err != nil {
			return err
		}
		promoted = &o
	}
	if f.writeOut == "json" {
		res := map[string]any{"cluster": s.cluster, "index": out.Index, "start_command": start, "member": membership.Member{
			ID: out.RaftID, Name: name, Incarnation: cand.Incarnation, ClientURL: cand.ClientURL, Learner: f.learner && promoted == nil}}
		if promoted != nil {
			res["promoted_index"] = promoted.Index
		}
		return writeJSON(g.stdout, s.jsonResult(res))
	}
	if promoted != nil {
		fmt.Fprintf(g.stdout, "Member %s (%s) caught up and was promoted to voter at index %d\n", out.RaftID, name, promoted.Index)
		return nil
	}
	as := ""
	if f.learner {
		as = " as learner"
	}
	fmt.Fprintf(g.stdout, "Member %s added%s to %s: %s (incarnation %s)\n", out.RaftID, as, s.where(), name, cand.Incarnation)
	if s.group != 0 {
		fmt.Fprintf(g.stdout, "\nThe host runs its member of group %d once its node learns of the addition. If the host is not running, start it with:\n", s.group)
	} else {
		fmt.Fprintf(g.stdout, "\nThe node waiting with --join starts by itself. If it is not running, start it with:\n")
	}
	fmt.Fprintf(g.stdout, "  %s\n", start)
	return nil
}

// resolve turns a hex ID or a name into a member.
func resolve(d *membership.Directory, arg string) (membership.Member, error) {
	if m, ok := d.ByName(arg); ok {
		return m, nil
	}
	id, err := raftbridge.ParseID(arg)
	if err != nil {
		return membership.Member{}, withCode(ExitNoSuchMember, fmt.Errorf("no member named %q (and it is not a hex member ID)", arg))
	}
	if m, ok := d.Members[id]; ok {
		return *m, nil
	}
	if d.RemovedIDs[id] {
		return membership.Member{}, withCode(ExitNoSuchMember, fmt.Errorf("member %s was removed", id))
	}
	return membership.Member{}, withCode(ExitNoSuchMember, fmt.Errorf("no member with ID %s", id))
}

func memberChange(ctx context.Context, g *globals, f *memberFlags, op, arg string) error {
	return f.withDirectory(ctx, func(ctx context.Context, s *session, d *membership.Directory) error {
		return runChange(ctx, g, f, s, d, op, arg)
	})
}

func runChange(ctx context.Context, g *globals, f *memberFlags, s *session, d *membership.Directory, op, arg string) error {
	m, err := resolve(d, arg)
	if err != nil {
		return err
	}
	if op == membership.OpPromote && !m.Learner {
		return withCode(ExitPrecondition, fmt.Errorf("member %s (%s) is not a learner: only learners can be promoted", m.ID, m.Name))
	}
	out, err := s.submit(ctx, d, membership.Request{Op: op, RaftID: m.ID, Name: m.Name, ExpectVersion: d.Version})
	if err != nil {
		return err
	}
	if f.writeOut == "json" {
		return writeJSON(g.stdout, s.jsonResult(map[string]any{"cluster": s.cluster, "index": out.Index, "op": op, "member": m}))
	}
	verb := map[string]string{membership.OpRemove: "removed from", membership.OpPromote: "promoted in"}[op]
	fmt.Fprintf(g.stdout, "Member %s %s %s\n", m.ID, verb, s.where())
	return nil
}

type listRow struct {
	ID          membership.HexID `json:"id"`
	Name        string           `json:"name"`
	Incarnation uuid.UUID        `json:"incarnation"`
	Role        string           `json:"role"`
	Status      string           `json:"status"`
	Leader      bool             `json:"is_leader"`
	LastSeen    *time.Time       `json:"last_seen,omitempty"`
	ClientURL   string           `json:"client_url,omitempty"`
}

func memberList(ctx context.Context, g *globals, f *memberFlags) error {
	return f.withDirectory(ctx, func(ctx context.Context, s *session, d *membership.Directory) error {
		return runList(ctx, g, f, s, d)
	})
}

func runList(ctx context.Context, g *globals, f *memberFlags, s *session, d *membership.Directory) error {
	live, _ := membership.QueryStatus(ctx, s.nc, s.prefix, s.cluster, min(500*time.Millisecond, f.nats.timeout/4))
	inGroup := groupStatuses(live, s.group)
	now := time.Now().UTC()
	var rows []listRow
	for _, m := range d.Sorted() {
		r := listRow{ID: m.ID, Name: m.Name, Incarnation: m.Incarnation, Role: "voter", Status: "unstarted", ClientURL: m.ClientURL}
		if m.Learner {
			r.Role = "learner"
			if m.AutoPromote {
				r.Role = "learner (auto-promote)"
			}
		}
		if a, ok := d.Announced[m.Incarnation]; ok {
			t := a.Time
			r.LastSeen, r.Status = &t, "started"
			if r.ClientURL == "" {
				r.ClientURL = a.ClientURL
			}
		}
		for _, st := range live {
			if st.Incarnation == m.Incarnation {
				r.LastSeen, r.Status = &now, "started"
			}
		}
		for _, st := range inGroup {
			if st.Leader == m.ID && st.Leader != 0 {
				r.Leader = true
			}
		}
		rows = append(rows, r)
	}
	applyLiveness(rows, live, now)
	if f.writeOut == "json" {
		return writeJSON(g.stdout, s.jsonResult(map[string]any{"cluster": s.cluster, "version": d.Version, "members": rows}))
	}
	if s.group != 0 {
		fmt.Fprintf(g.stdout, "Group %d of cluster %s, version %d\n", s.group, s.cluster, d.Version)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tINCARNATION\tROLE\tSTATUS\tLEADER\tLAST SEEN\tCLIENT URL")
	for _, r := range rows {
		lead, seen := "", "never"
		if r.Leader {
			lead = "*"
		}
		if r.LastSeen != nil {
			seen = r.LastSeen.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Incarnation, r.Role, r.Status, lead, seen, r.ClientURL)
	}
	return tw.Flush()
}

func memberHistory(ctx context.Context, g *globals, f *memberFlags) error {
	ctx, cancel := f.context(ctx)
	defer cancel()
	s, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	recs, err := s.stream.ReadAll(ctx)
	if err != nil {
		return s.classify(err)
	}
	// Records the directory does not accept are shown as rejected, with
	// the reason, and never acted upon.
	d := membership.Rebuild(recs)
	if f.writeOut == "json" {
		type row struct {
			Seq uint64 `json:"seq"`
			membership.Record
			Rejected *membership.RejectedRecord `json:"rejected,omitempty"`
			// Unconfirmed: a committed record a majority of voters has
			// not (yet) written; it has no effect.
			Unconfirmed bool `json:"unconfirmed,omitempty"`
		}
		unconfirmed := d.Unconfirmed()
		out := make([]row, len(recs))
		for i, r := range recs {
			out[i] = row{Seq: r.Seq, Record: r}
			if rr, ok := d.RejectedAt(r.Seq); ok {
				out[i].Rejected = &rr
			}
			_, out[i].Unconfirmed = unconfirmed[r.Seq]
		}
		return writeJSON(g.stdout, s.jsonResult(map[string]any{"records": out, "rejected": d.RejectedCounts()}))
	}
	if s.group != 0 {
		fmt.Fprintf(g.stdout, "Group %d of cluster %s: its requests, outcomes and committed changes, and every host's announcements\n", s.group, s.cluster)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tDETAIL\tBY")
	story := newHistoryStory()
	story.group = s.group
	unconfirmed := d.Unconfirmed()
	for _, r := range recs {
		if rr, ok := d.RejectedAt(r.Seq); ok {
			fmt.Fprintf(tw, "%d\t%s\t%s\tREJECTED (%s): %s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.Kind, rr.Reason, rr.Problem, r.Subject)
			continue
		}
		if c, ok := unconfirmed[r.Seq]; ok {
			fmt.Fprintf(tw, "%d\t%s\t%s\tUNCONFIRMED: %s at index %d is written by too few voters to take effect (a majority must write it)\t%s\n",
				r.Seq, r.Time.Format(time.RFC3339), r.Kind, c.Op+" "+who(story.member(c.Member)), c.Index, story.signer(r))
			continue
		}
		detail, by := story.describe(r)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.Kind, detail, by)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(d.Rejected); n > 0 {
		fmt.Fprintf(g.stdout, "\n%d record(s) rejected and ignored: %v\n", n, d.RejectedCounts())
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// groupZeroID is the Raft ID incarnation inc holds in group 0, where a
// host gets its Raft ID: a host must join group 0 before any other.
func (s *session) groupZeroID(ctx context.Context, inc uuid.UUID, name string) (membership.HexID, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return 0, fmt.Errorf("JetStream: %w", err)
	}
	st, err := membership.OpenStream(ctx, membership.StreamConfig{JS: js, Prefix: s.prefix, Cluster: s.cluster})
	if err != nil {
		return 0, s.classify(err)
	}
	recs, err := st.ReadAll(ctx)
	if err != nil {
		return 0, s.classify(err)
	}
	for _, m := range membership.Rebuild(recs).Sorted() {
		if m.Incarnation == inc {
			return membership.HexID(m.ID), nil
		}
	}
	return 0, withCode(ExitPrecondition, fmt.Errorf("%s (incarnation %s) is not a member of group 0: a host joins group 0 first ('raftbus member add %s'), which gives it the Raft ID it holds in every group", name, inc, name))
}

// groupCount is how many Raft groups the cluster's stream shows records of
// (1 when only group 0, or when it cannot tell).
func (s *session) groupCount(ctx context.Context) int {
	n := 1
	if gs, err := s.stream.InGroup(0).Groups(ctx); err == nil && len(gs) > 0 {
		n = int(slices.Max(gs)) + 1
	}
	// A running node knows all its groups, also those whose records are
	// not on the stream yet.
	live, _ := membership.QueryStatus(ctx, s.nc, s.prefix, s.cluster, 500*time.Millisecond)
	for _, st := range live {
		for g := range st.Groups {
			n = max(n, int(g)+1)
		}
	}
	return n
}
