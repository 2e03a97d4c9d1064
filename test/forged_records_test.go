package test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
)

// Issue 9: one forged members.committed record (a removal of a live
// member) stopped that member, again on every restart, and one malformed
// record broke every `member` command forever. Now forged records of every
// kind are skipped and counted, no node stops, `member list` and `member
// history` work (history shows the rejected rows) and members can still be
// added and removed.
func TestForgedMembershipRecordsStopNothing(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	c.waitBound()
	nc := testnats.Connect(t, c.nats[0])
	n1, victim := c.idents[0], c.idents[1]
	subj := func(parts ...string) string {
		return "raftbus." + c.cluster.String() + ".members." + strings.Join(parts, ".")
	}
	publish := func(subject string, data []byte, kp nkeys.KeyPair) { publishRecord(t, nc, subject, data, kp, "") }
	removal, _ := json.Marshal(membership.Record{V: 1, Kind: membership.KindCommitted, Time: time.Now().UTC(), Cluster: c.cluster,
		Committed: &membership.Committed{Index: 1 << 40, Op: membership.OpRemove, Version: 1 << 40,
			Member: membership.Member{ID: membership.HexID(victim.RaftID), Name: victim.Name, Incarnation: victim.Incarnation}}})
	stranger, _ := nkeys.CreateUser()
	victimKey, err := datadir.LoadKey(c.dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	publish(subj("committed", n1.Incarnation.String()), removal, nil)                            // unsigned
	publish(subj("committed", mustV7(t).String()), removal, stranger)                            // not a member
	publish(subj("committed", n1.Incarnation.String()), removal, victimKey)                      // a member's key, another's subject
	publish(subj("committed", n1.Incarnation.String()), []byte(`{"v":1,"kind":"committed`), nil) // malformed
	publish(subj("request"), []byte(`{"v":1,"kind":"request","request":{"id":"x","raft_id":"zz"}}`), nil)
	outcome, _ := json.Marshal(membership.Record{V: 1, Kind: membership.KindOutcome, Cluster: c.cluster,
		Outcome: &membership.Outcome{RequestID: "x", Status: membership.StatusApplied}})
	publish(subj("outcome", "x", mustV7(t).String()), outcome, stranger)

	// Every node skips and counts the four forged committed records.
	testnats.Eventually(t, 15*time.Second, func() error {
		for _, s := range c.up() {
			if got := s.Status().MembershipRejected; len(got) != 4 || got[membership.RejectMalformed] != 1 || got[membership.RejectWrongSource] != 1 ||
				got[membership.RejectUnsigned] != 1 || got[membership.RejectNotAuthorized] != 1 {
				return fmt.Errorf("%s counts %v", s.Identity().Name, got)
			}
		}
		return nil
	})
	if out, errOut, code := runCLI(t, c.memberArgs("list")...); code != 0 || !strings.Contains(out, victim.Name) {
		t.Fatalf("member list: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code := runCLI(t, c.memberArgs("history")...)
	if code != 0 || strings.Count(out, "REJECTED") != 6 ||
		!strings.Contains(out, "REJECTED (unsigned)") || !strings.Contains(out, "REJECTED (malformed)") ||
		!strings.Contains(out, "REJECTED (not_authorized)") || !strings.Contains(out, "REJECTED (wrong_source)") {
		t.Fatalf("member history: exit %d\n%s%s", code, out, errOut)
	}
	// Membership still changes, through the same stream.
	s := c.waitBound()
	announceFake(t, s, "n4")
	if out, errOut, code := runCLI(t, c.memberArgs("add", "n4", "--learner")...); code != 0 {
		t.Fatalf("member add: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := runCLI(t, c.memberArgs("remove", "n4")...); code != 0 {
		t.Fatalf("member remove: exit %d\n%s%s", code, out, errOut)
	}
	// A verified removal does stop its member: remove n3 for real.
	if out, errOut, code := runCLI(t, c.memberArgs("remove", c.idents[2].Name)...); code != 0 {
		t.Fatalf("member remove n3: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case <-c.servers[2].Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	for _, i := range []int{0, 1} {
		select {
		case <-c.servers[i].Done():
			t.Fatalf("%s stopped", c.idents[i].Name)
		default:
		}
	}
}

func encodeSig(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }

// publishRecord writes a membership record straight onto the stream, as
// an attacker would: signed with kp when it is not nil, de-duplicated by
// msgID when it is not empty.
func publishRecord(t *testing.T, nc *nats.Conn, subject string, data []byte, kp nkeys.KeyPair, msgID string) {
	t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if kp != nil {
		pub, _ := kp.PublicKey()
		sig, _ := kp.Sign([]byte(subject + "\n" + string(data)))
		msg.Header.Set(membership.HeaderSigner, pub)
		msg.Header.Set(membership.HeaderSig, encodeSig(sig))
	}
	if msgID != "" {
		msg.Header.Set("Nats-Msg-Id", msgID)
	}
	if _, err := nc.RequestMsg(msg, 5*time.Second); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}
