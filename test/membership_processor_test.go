package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
)

// Issue 10, against real nodes: a request that cannot succeed (a promote
// of a learner that never runs) is decided as a rejection through Raft and
// never blocks the requests behind it; `member add --learner
// --promote-when-caught-up` adds a real joiner, which the leader promotes
// once it has caught up; the history tells the story.
func TestMembershipDecisionsEndToEnd(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	lead := c.waitLeader()
	s := c.waitBound()
	writeMany(t, c.up(), "k", 20, smallValue)

	// A learner that never starts: its promote is rejected as not ready.
	announceFake(t, s, "ghost")
	if out, errOut, code := runCLI(t, c.memberArgs("add", "ghost", "--learner")...); code != 0 {
		t.Fatalf("add ghost: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code := runCLI(t, c.memberArgs("promote", "ghost")...)
	if code != 4 || !strings.Contains(errOut, "not in sync") {
		t.Fatalf("promote ghost: exit %d, %s", code, errOut)
	}
	// The rejection is replicated: every node has decided it.
	testnats.Eventually(t, 10*time.Second, func() error {
		for _, srv := range c.up() {
			found := false
			for _, h := range srv.Node().Membership().History {
				found = found || h.Code == membership.CodeNotReady
			}
			if !found {
				return fmt.Errorf("%s has not applied the rejection", srv.Identity().Name)
			}
		}
		return nil
	})

	// A real joiner, added as a learner and promoted by the leader.
	dir := filepath.Join(t.TempDir(), "n5")
	if _, err := datadir.Create(dir, datadir.Identity{ClusterID: c.cluster, Name: "n5"}); err != nil {
		t.Fatal(err)
	}
	// What `raftbus node --join` does once it reads its addition; the
	// leader allocates 5 (4 went to ghost).
	if _, err := datadir.SetRaftID(dir, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := startDir(t, c.nats[0], dir, nil, lead.Node().Members(), true, node.Config{}); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 10*time.Second, func() error {
		recs, err := s.ReadAll(context.Background(), membership.KindAnnounce)
		if err != nil {
			return err
		}
		if _, ok := membership.Rebuild(recs).Candidate("n5"); !ok {
			return fmt.Errorf("n5 has not announced itself")
		}
		return nil
	})
	out, errOut, code := runCLI(t, append(c.memberArgs("add", "n5", "--learner", "--promote-when-caught-up"), "--timeout", "30s")...)
	if code != 0 || !strings.Contains(out, "promoted to voter") || !strings.Contains(out, "--listen") {
		t.Fatalf("add n5 --promote-when-caught-up: exit %d\n%s%s", code, out, errOut)
	}
	for _, m := range lead.Node().Membership().Members {
		if m.Name == "n5" && m.Learner {
			t.Fatalf("n5 is still a learner: %+v", m)
		}
	}
	hist := mustRun(t, c.memberArgs("history")...)
	for _, want := range []string{"rejected (not_ready)", "add-learner 0000000000000005 n5 (incarnation", "promote 0000000000000005 n5"} {
		if !strings.Contains(hist, want) {
			t.Fatalf("history lacks %q:\n%s", want, hist)
		}
	}
}

// `raftbus member stream repair`: the membership stream is deleted; the
// cluster keeps routing and stops membership operations; the admin's
// repair recreates it, the leader rebinds the cluster to it and publishes
// the replicated membership (a baseline), and membership operations work
// again on the new stream.
func TestMembershipStreamRepairEndToEnd(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	s := c.waitBound()
	announceFake(t, s, "ghost")
	if out, errOut, code := runCLI(t, c.memberArgs("add", "ghost", "--learner")...); code != 0 {
		t.Fatalf("add ghost: exit %d\n%s%s", code, out, errOut)
	}
	js, err := jetstream.New(testnats.Connect(t, c.nats[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), membership.StreamName("raftbus", c.cluster)); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 15*time.Second, func() error {
		for _, srv := range c.up() {
			if srv.Node().IsLeader() && strings.Contains(srv.Status().MembershipProblem, "missing") {
				return nil
			}
		}
		return fmt.Errorf("the leader reports no missing stream")
	})
	out, errOut, code := runCLI(t, c.memberArgs("stream", "repair")...)
	if code != 0 || !strings.Contains(out, "repaired") {
		t.Fatalf("member stream repair: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, c.memberArgs("list")...)
	if code != 0 || !strings.Contains(out, "ghost") || !strings.Contains(out, "n3") {
		t.Fatalf("member list after the repair: exit %d\n%s%s", code, out, errOut)
	}
	testnats.Eventually(t, 10*time.Second, func() error {
		for _, srv := range c.up() {
			if p := srv.Status().MembershipProblem; p != "" {
				return fmt.Errorf("%s: %s", srv.Identity().Name, p)
			}
		}
		return nil
	})
	if out, errOut, code := runCLI(t, c.memberArgs("remove", "ghost")...); code != 0 {
		t.Fatalf("remove ghost on the repaired stream: exit %d\n%s%s", code, out, errOut)
	}
	// A second repair of a healthy stream is refused with a reason.
	if _, errOut, code := runCLI(t, c.memberArgs("stream", "repair")...); code != 4 || !strings.Contains(errOut, "nothing to repair") {
		t.Fatalf("repair of a healthy stream: exit %d, %s", code, errOut)
	}
	if n := len(c.up()); n != 3 {
		t.Fatalf("%d nodes still run", n)
	}
	for _, srv := range c.up() {
		select {
		case <-srv.Done():
			t.Fatalf("%s stopped", srv.Identity().Name)
		default:
		}
	}
}
