package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
)

// Issue 9, found by running the secured cluster by hand: with one
// member's own credentials (n2's NKEY, publishing on its own subject,
// which the generated permissions allow) a signed "remove n3" stopped n3,
// and n3 stopped again on every restart. A committed change now needs a
// quorum of the voters it concerns, so one member's word removes nobody
// and freezes nothing, while a real removal still stops its member.
func TestOneMembersKeyCannotRemoveAnother(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	c.waitBound()
	nc := testnats.Connect(t, c.nats[0])
	forger, victim := c.idents[1], c.idents[2]
	forgerKey, err := datadir.LoadKey(c.dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	subject := "raftbus." + c.cluster.String() + ".members.committed." + forger.Incarnation.String()
	forge := func(index uint64, body []byte) {
		publishRecord(t, nc, subject, body, forgerKey, fmt.Sprintf("forged-%d", index))
	}
	removal := func(index uint64) []byte {
		b, _ := json.Marshal(membership.Record{V: 1, Kind: membership.KindCommitted, Time: time.Now().UTC(), Cluster: c.cluster,
			Committed: &membership.Committed{Index: index, Op: membership.OpRemove, Version: index,
				Member: membership.Member{ID: membership.HexID(victim.RaftID), Name: victim.Name, Incarnation: victim.Incarnation}}})
		return b
	}
	next := c.up()[0].Node().Membership().Applied + 1
	forge(next, removal(next))     // the next index, as a real change would get
	forge(1<<40, removal(1<<40))   // far ahead: used to freeze every later change
	forge(1<<41, []byte(`{"v":1`)) // malformed: when it is counted, the forgeries above were read
	testnats.Eventually(t, 15*time.Second, func() error {
		for _, s := range c.up() {
			select {
			case <-s.Done():
				return fmt.Errorf("%s stopped on one member's signed record", s.Identity().Name)
			default:
			}
			if got := s.Status().MembershipRejected[membership.RejectMalformed]; got != 1 {
				return fmt.Errorf("%s has not read the forged records yet (%v)", s.Identity().Name, s.Status().MembershipRejected)
			}
		}
		return nil
	})
	select {
	case <-c.servers[2].Done():
		t.Fatalf("one member's signed record stopped %s", victim.Name)
	default:
	}
	// A restart reads the same records and keeps running.
	c.servers[2].Stop()
	c.servers[2] = c.start(2, nil)
	c.waitSame(0)
	// Membership keeps changing past both forged indexes.
	s := c.waitBound()
	announceFake(t, s, "n4")
	if out, errOut, code := runCLI(t, c.memberArgs("add", "n4", "--learner")...); code != 0 {
		t.Fatalf("member add: exit %d\n%s%s", code, out, errOut)
	}
	testnats.Eventually(t, 15*time.Second, func() error {
		out, errOut, code := runCLI(t, c.memberArgs("list")...)
		if code != 0 || !strings.Contains(out, "n4") || !strings.Contains(out, victim.Name) {
			return fmt.Errorf("member list: exit %d\n%s%s", code, out, errOut)
		}
		return nil
	})
	// A real removal is attested by the two remaining voters and stops n3.
	if out, errOut, code := runCLI(t, c.memberArgs("remove", victim.Name)...); code != 0 {
		t.Fatalf("member remove: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case <-c.servers[2].Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the really removed member did not stop")
	}
	out, _, _ := runCLI(t, c.memberArgs("history")...)
	if !strings.Contains(out, "REJECTED (unconfirmed)") || !strings.Contains(out, "UNCONFIRMED: remove") {
		t.Fatalf("history does not show the superseded forgery and the one still waiting:\n%s", out)
	}
}
