package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/internal/cli"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/server"
)

// runCLI runs a raftbus command in this process and returns its output and
// exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Main(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func (c *srvCluster) memberArgs(args ...string) []string {
	return append(append([]string{"member"}, args...), "-s", c.nats[0].ClientURL(), "--cluster", c.cluster.String(), "--timeout", "10s")
}

func (c *srvCluster) waitBound() *membership.Stream {
	c.t.Helper()
	js, err := jetstream.New(testnats.Connect(c.t, c.nats[0]))
	if err != nil {
		c.t.Fatal(err)
	}
	var s *membership.Stream
	testnats.Eventually(c.t, 20*time.Second, func() error {
		var err error
		s, err = membership.OpenStream(context.Background(), membership.StreamConfig{JS: js, Cluster: c.cluster})
		if err != nil {
			return err
		}
		recs, err := s.ReadAll(context.Background(), membership.KindCommitted)
		if err != nil {
			return err
		}
		if len(recs) < len(c.dirs) {
			return fmt.Errorf("%d committed records", len(recs))
		}
		return nil
	})
	return s
}

// announceFake records an announcement of an incarnation that never runs,
// so that `member add` has a candidate.
func announceFake(t *testing.T, s *membership.Stream, name string) uuid.UUID {
	t.Helper()
	inc := mustV7(t)
	// A node announces on its own subject, signed with its key.
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	as, err := s.As(inc, kp)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Announce(context.Background(), membership.Announce{Incarnation: inc, Name: name, Protocol: 1}); err != nil {
		t.Fatal(err)
	}
	return inc
}

// The member commands' error cases, each with its own exit code.
func TestMemberCommandErrors(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	s := c.waitBound()

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no such member", c.memberArgs("remove", "99"), cli.ExitNoSuchMember, "no member"},
		{"no such name", c.memberArgs("promote", "nobody"), cli.ExitNoSuchMember, "no member named"},
		{"not announced", c.memberArgs("add", "ghost"), cli.ExitPrecondition, "has announced"},
		{"already a member", c.memberArgs("add", "n1"), cli.ExitPrecondition, "already member"},
		{"promote a voter", c.memberArgs("promote", "n2"), cli.ExitPrecondition, "not a learner"},
		{"bad output format", c.memberArgs("list", "-w", "yaml"), cli.ExitUsage, "--write-out"},
		{"bad argument count", c.memberArgs("remove"), cli.ExitUsage, "arg"},
		{"unreachable", []string{"member", "list", "-s", "nats://127.0.0.1:1", "--cluster", c.cluster.String(), "--timeout", "1s"}, cli.ExitUnreachable, "connect"},
		{"unknown cluster", []string{"member", "list", "-s", c.nats[0].ClientURL(), "--cluster", uuid.NewString(), "--timeout", "2s"}, cli.ExitUnreachable, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want it to mention %q), stdout %q", code, tc.code, errOut, tc.want, out)
			}
		})
	}

	// A concurrent change: a request submitted against an outdated view of
	// the request log is refused by JetStream and nothing is recorded.
	last, err := s.LastRequestSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	announceFake(t, s, "racer")
	if _, err := s.Submit(context.Background(), membership.Request{ID: uuid.NewString(), Op: membership.OpRemove, RaftID: 99}, last); err != nil {
		t.Fatalf("first submission: %v", err)
	}
	_, err = s.Submit(context.Background(), membership.Request{ID: uuid.NewString(), Op: membership.OpRemove, RaftID: 98}, last)
	if !errors.Is(err, membership.ErrConflict) {
		t.Fatalf("second submission against the same last sequence: %v, want ErrConflict", err)
	}

	// JSON output carries 64-bit IDs as hex strings.
	out, _, code := runCLI(t, c.memberArgs("list", "-w", "json")...)
	if code != 0 || !strings.Contains(out, `"id": "0000000000000001"`) {
		t.Fatalf("list -w json: exit %d\n%s", code, out)
	}

	// Removing down to the last voter is refused.
	mustRun(t, c.memberArgs("remove", "n3")...)
	mustRun(t, c.memberArgs("remove", "n2")...)
	_, errOut, code := runCLI(t, c.memberArgs("remove", "n1")...)
	if code != cli.ExitLastVoter || !strings.Contains(errOut, "last voter") {
		t.Fatalf("removing the last voter: exit %d, %s", code, errOut)
	}

	// No leader: a second voter is added that never starts, so the cluster
	// loses its quorum. The request stays recorded; the command times out.
	announceFake(t, s, "late")
	mustRun(t, c.memberArgs("add", "late")...)
	args := c.memberArgs("remove", "late")
	args[len(args)-1] = "3s"
	_, errOut, code = runCLI(t, args...)
	if code != cli.ExitTimeout || !strings.Contains(errOut, "within --timeout") {
		t.Fatalf("change without a leader: exit %d (want %d), %s", code, cli.ExitTimeout, errOut)
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("raftbus %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// Permission denied by NATS is reported as such (exit 8), not as a timeout.
func TestMemberPermissionDenied(t *testing.T) {
	opts := testnats.Options(t)
	opts.Users = []*natsserver.User{
		{Username: "admin", Password: "pw"},
		{Username: "reader", Password: "pw", Permissions: &natsserver.Permissions{
			Publish: &natsserver.SubjectPermission{Allow: []string{"$JS.API.>", "_INBOX.>", "raftbus.*.status"}, Deny: []string{"raftbus.*.members.request"}},
		}},
	}
	ns := testnats.Run(t, opts)
	// A cluster is not needed: a stream is enough to reach the publish.
	nc := testnats.Connect(t, ns, nats.UserInfo("admin", "pw"))
	js, _ := jetstream.New(nc)
	cluster := uuid.New()
	// The bootstrap record of a one-node cluster, written (signed) by it.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	inc := mustV7(t)
	s, err := membership.CreateStream(context.Background(), membership.StreamConfig{JS: js, Cluster: cluster, Incarnation: inc, Signer: kp})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PublishCommitted(context.Background(), membership.Committed{Index: 1, Op: membership.OpAdd, Version: 1,
		Member: membership.Member{ID: 1, Name: "n1", Incarnation: inc, PublicKey: pub}}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCLI(t, "member", "remove", "n1", "-s", ns.ClientURL(), "--user", "reader", "--password", "pw", "--cluster", cluster.String(), "--timeout", "3s")
	if code != cli.ExitPermission || !strings.Contains(errOut, "permission") {
		t.Fatalf("exit %d, stderr %q; want %d and a permission message", code, errOut, cli.ExitPermission)
	}
	// The reader may still list.
	if out, errOut, code := runCLI(t, "member", "list", "-s", ns.ClientURL(), "--user", "reader", "--password", "pw", "--cluster", cluster.String()); code != 0 {
		t.Fatalf("list as reader: exit %d %s %s", code, out, errOut)
	}
}

// Removing the leader hands leadership to another voter first; the new
// leader settles the removal and the removed node stops itself.
func TestRemoveLeaderTransfersFirst(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	lead := c.waitLeader()
	c.waitBound()
	out := mustRun(t, c.memberArgs("remove", lead.Identity().Name)...)
	if !strings.Contains(out, "removed from cluster") {
		t.Fatalf("remove output: %s", out)
	}
	testnats.Eventually(t, 20*time.Second, func() error {
		select {
		case <-lead.Done():
		default:
			return fmt.Errorf("the removed leader %s still runs", lead.Identity().Name)
		}
		if !errors.Is(lead.Node().Err(), node.ErrRemoved) {
			return fmt.Errorf("the removed leader stopped with %v", lead.Node().Err())
		}
		return nil
	})
	var rest []*server.Server
	for _, s := range c.up() {
		if s != lead {
			rest = append(rest, s)
		}
	}
	testnats.Eventually(t, 20*time.Second, func() error {
		for _, s := range rest {
			if l := s.Node().Leader(); l == 0 || l == lead.Identity().RaftID {
				return fmt.Errorf("%s sees leader %x", s.Identity().Name, l)
			}
		}
		return nil
	})
	writeMany(t, rest, "after", 20, smallValue)
}
