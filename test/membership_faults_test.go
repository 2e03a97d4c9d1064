package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/server"
)

// memberIDs lists a node's members' IDs.
func memberIDs(s *server.Server) []uint64 {
	var ids []uint64
	for _, m := range s.Node().Members() {
		ids = append(ids, uint64(m.ID))
	}
	return ids
}

// A NATS server of the cluster dies while a membership change is under
// way. The change completes or fails cleanly, never half-applied: in the
// end every node's membership equals the directory rebuilt from the
// stream's committed records, and further changes still work.
func TestNATSServerKilledDuringMembershipChange(t *testing.T) {
	servers := testnats.RunCluster(t, 3)
	c := newSrvClusterOn(t, servers, 3, node.Config{})
	c.waitLeader()
	s := c.waitBound()
	writeMany(t, c.up(), "k", 50, smallValue)

	announceFake(t, s, "n4")
	done := make(chan struct{})
	var code int
	var errOut string
	go func() {
		defer close(done)
		_, errOut, code = runCLI(t, c.memberArgs("add", "n4", "--learner")...)
	}()
	// Kill a server that is not the one the operator talks to, as soon as
	// the request is recorded.
	testnats.Eventually(t, 10*time.Second, func() error {
		if seq, err := s.LastRequestSeq(context.Background()); err != nil || seq == 0 {
			return fmt.Errorf("request not recorded yet (%v)", err)
		}
		return nil
	})
	servers[2].Shutdown()
	<-done
	t.Logf("member add during the server kill: exit %d %s", code, errOut)

	// Whatever the command saw, the cluster converges on one answer.
	js, err := jetstream.New(testnats.Connect(t, servers[0]))
	if err != nil {
		t.Fatal(err)
	}
	// JetStream may be electing new stream and meta leaders for a while
	// after the kill: every step is retried until the deadline.
	var s0 *membership.Stream
	testnats.Eventually(t, 45*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if s0 == nil {
			if s0, err = membership.OpenStream(ctx, membership.StreamConfig{JS: js, Cluster: c.cluster}); err != nil {
				return err
			}
		}
		recs, err := s0.ReadAll(ctx, membership.KindCommitted)
		if err != nil {
			return err
		}
		var want []uint64
		for _, m := range membership.Rebuild(recs).Sorted() {
			want = append(want, uint64(m.ID))
		}
		for _, srv := range c.up() {
			if got := memberIDs(srv); !slices.Equal(got, want) {
				return fmt.Errorf("%s has members %v, the stream says %v", srv.Identity().Name, got, want)
			}
		}
		return nil
	})
	// The cluster still takes writes and membership changes.
	writeMany(t, c.up(), "after", 20, smallValue)
	mustRun(t, c.memberArgs("list")...)
}

// A membership stream deleted and recreated behind the cluster's back is
// detected: membership operations stop with a clear error, an empty stream
// is never read as "no members", and routing continues from the replicated
// directory.
func TestMembershipStreamRecreated(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	c.waitBound()
	js, err := jetstream.New(testnats.Connect(t, c.nats[0]))
	if err != nil {
		t.Fatal(err)
	}
	name := membership.StreamName("raftbus", c.cluster)
	if err := js.DeleteStream(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	if _, err := membership.CreateStream(context.Background(), membership.StreamConfig{JS: js, Cluster: c.cluster}); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 15*time.Second, func() error {
		for _, s := range c.up() {
			if s.Node().IsLeader() && s.Status().MembershipProblem != "" {
				return nil
			}
		}
		return fmt.Errorf("the leader reports no membership problem")
	})
	_, errOut, code := runCLI(t, c.memberArgs("list")...)
	if code == 0 || !strings.Contains(errOut, "recreated") {
		t.Fatalf("member list on a recreated, empty stream: exit %d, %s", code, errOut)
	}
	t.Logf("member list on the recreated stream: exit %d: %s", code, errOut)
	// Routing continues: writes commit on every node.
	writeMany(t, c.up(), "still", 30, smallValue)
	c.waitSame(30)
	for _, s := range c.up() {
		if n := len(s.Node().Members()); n != 3 {
			t.Fatalf("%s lost its members: %d", s.Identity().Name, n)
		}
	}
}
