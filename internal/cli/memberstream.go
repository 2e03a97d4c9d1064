package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/membership"
)

// newMemberStreamCmd is `raftbus member stream`, with `repair`.
func newMemberStreamCmd(g *globals, f *memberFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "stream", Short: "The membership stream itself (repair)"}
	replicas := 1
	repair := &cobra.Command{
		Use:   "repair",
		Short: "Rebuild a lost or recreated membership stream from the cluster's replicated membership (admin only)",
		Long: `The membership stream is how everyone learns membership; Raft is the truth.
If the stream was lost, or deleted and recreated, membership operations stop
(the leader's /status says why) while routing continues. 'repair' creates
the stream if it is missing and records a repair request on it: the leader
then binds the cluster to this stream, in replicated state, and publishes
the replicated membership on it (a baseline record with every member and
tombstone, and the outcome of every request decided so far). Requests are
read from the start of the new stream. Needs --cluster and the admin's
credentials (with permission to create the stream).

Each Raft group is bound to the stream in its own replicated state, so
after the stream was lost every group needs its repair: run it once per
group with --group G (group 0 without).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return memberStreamRepair(cmd.Context(), g, f, replicas) },
	}
	repair.Flags().IntVar(&replicas, "replicas", 1, "replicas of the stream if it must be created (3 on a three-server NATS cluster)")
	cmd.AddCommand(repair)
	return cmd
}

func memberStreamRepair(ctx context.Context, g *globals, f *memberFlags, replicas int) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.cluster == "" {
		return usageErr(errors.New("member stream repair needs --cluster (or $RAFTBUS_CLUSTER): with the stream lost it cannot be discovered"))
	}
	cluster, err := uuid.Parse(f.cluster)
	if err != nil {
		return usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	s := &session{prefix: f.prefix, cluster: cluster, group: f.group}
	nc, err := f.nats.connect("raftbus-member", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			s.permDenied.Store(true)
		}
	}))
	if err != nil {
		return err
	}
	s.nc = nc
	defer s.close()
	js, err := jetstream.New(nc)
	if err != nil {
		return withCode(ExitUnreachable, err)
	}
	s.stream, err = membership.CreateStream(ctx, membership.StreamConfig{JS: js, Prefix: f.prefix, Cluster: cluster, Replicas: replicas, Group: f.group})
	if err != nil {
		return s.classify(err)
	}
	last, err := s.stream.LastRequestSeq(ctx)
	if err != nil {
		return s.classify(err)
	}
	req := membership.Request{ID: uuid.NewString(), Op: membership.OpRepairStream, By: requester()}
	if _, err := s.stream.Submit(ctx, req, last); err != nil {
		return s.classify(err)
	}
	// No directory to judge the outcome by yet: the leader's baseline
	// comes with it; the signature is checked, the signer right after.
	out, err := s.stream.WaitOutcome(ctx, req.ID, nil)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return withCode(ExitTimeout, fmt.Errorf("no outcome for repair request %s within --timeout: the cluster may have no leader; the request stays recorded and the leader acts on it when it can", req.ID))
		}
		return s.classify(err)
	}
	if out.Status == membership.StatusRejected {
		return rejection(out)
	}
	recs, err := s.stream.ReadAll(ctx, membership.KindCommitted, membership.KindOutcome)
	if err != nil {
		return s.classify(err)
	}
	d := membership.Rebuild(recs)
	if _, ok := d.Members[out.Leader]; !ok {
		return fmt.Errorf("the repair was answered by %s, which the repaired stream does not show as a member: check 'raftbus member history'", out.Leader)
	}
	if f.writeOut == "json" {
		return writeJSON(g.stdout, s.jsonResult(map[string]any{"cluster": cluster, "stream": s.stream.Name(), "index": out.Index,
			"leader": out.Leader, "members": d.Sorted()}))
	}
	of := ""
	if s.group != 0 {
		of = fmt.Sprintf(" for group %d", s.group)
	}
	fmt.Fprintf(g.stdout, "Membership stream %s repaired%s by leader %s at index %d: %d members, %d tombstoned Raft IDs\n",
		s.stream.Name(), of, out.Leader, out.Index, len(d.Members), len(d.RemovedIDs))
	return nil
}
