package membership

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The leader is the only voter, with learners: removing it cannot hand
// leadership over. The request is rejected (last voter) as a decided fact,
// and the requests behind it, among them the promote that fixes things,
// are decided in the same pass.
func TestProcessorRemoveOnlyVoterWithLearners(t *testing.T) {
	c := newFake(t, 1, 2)
	c.raft.caught[2] = true
	c.log.submit(Request{ID: "rm-leader", Op: OpRemove, RaftID: 1})
	c.log.submit(Request{ID: "promote-2", Op: OpPromote, RaftID: 2})
	c.log.submit(c.addRequest("add-4", "n4", OpAddLearner))
	if err := c.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if o := c.outcome("rm-leader"); o.Status != StatusRejected || o.Code != CodeLastVoter {
		t.Fatalf("remove of the only voter: %+v", o)
	}
	if o := c.outcome("promote-2"); o.Status != StatusApplied {
		t.Fatalf("promote: %+v", o)
	}
	if o := c.outcome("add-4"); o.Status != StatusApplied || o.RaftID != 4 {
		t.Fatalf("add: %+v", o)
	}
	c.check()
}

// Two voters, one of them unreachable: the hand-over fails, the removal
// becomes a not_ready rejection the operator can retry, and the queue
// moves on.
func TestProcessorRemoveLeaderTransferFails(t *testing.T) {
	c := newFake(t, 2, 1)
	c.raft.transfer = func() error { return context.DeadlineExceeded }
	c.log.submit(Request{ID: "rm-leader", Op: OpRemove, RaftID: 1})
	c.log.submit(Request{ID: "rm-3", Op: OpRemove, RaftID: 3})
	if err := c.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if o := c.outcome("rm-leader"); o.Status != StatusRejected || o.Code != CodeNotReady || !strings.Contains(o.Reason, "handing leadership over failed") {
		t.Fatalf("remove of the leader: %+v", o)
	}
	if o := c.outcome("rm-3"); o.Status != StatusApplied {
		t.Fatalf("remove of the learner: %+v", o)
	}
	// The operator retries once the other voter is back: the leader hands
	// over, and the next leader removes it.
	c.raft.transfer = nil
	c.log.submit(Request{ID: "rm-leader-again", Op: OpRemove, RaftID: 1})
	if err := c.pass(); !errors.Is(err, errNotLeader) {
		t.Fatalf("pass: %v, want the leader to hand over", err)
	}
	if c.raft.leaderID() != 2 {
		t.Fatalf("leader %s, want 2", c.raft.leaderID())
	}
	c.drain(2)
	if o := c.outcome("rm-leader-again"); o.Status != StatusApplied || o.Leader != 2 {
		t.Fatalf("retried removal: %+v", o)
	}
	c.check()
}

// A promote rejected as not ready stays rejected when the learner catches
// up later: no later pass (a leader change, a restart) evaluates it again.
func TestProcessorRejectedPromoteStaysRejected(t *testing.T) {
	c := newFake(t, 3, 1)
	c.log.submit(Request{ID: "promote-4", Op: OpPromote, RaftID: 4})
	start := c.clock.Now()
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome("promote-4"); o.Code != CodeNotReady {
		t.Fatalf("promote of a lagging learner: %+v", o)
	}
	// Alone in the queue it waited, but only PromoteWait.
	if waited := c.clock.Now().Sub(start); waited < 10*time.Second || waited > 11*time.Second {
		t.Fatalf("waited %v for the learner", waited)
	}
	c.raft.caught[4] = true
	for _, leader := range []HexID{1, 2, 3} {
		c.raft.setLeader(leader)
		if err := c.pass(); err != nil {
			t.Fatal(err)
		}
	}
	st := c.raft.State()
	if m, _ := memberOf(st, 4); !m.Learner {
		t.Fatal("the rejected promote was applied later")
	}
	if n := c.raft.calls["promote-4"]; n != 1 {
		t.Fatalf("promote-4 put to Raft %d times", n)
	}
	// A new request is a new decision.
	c.log.submit(Request{ID: "promote-4b", Op: OpPromote, RaftID: 4})
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	if o := c.outcome("promote-4b"); o.Status != StatusApplied {
		t.Fatalf("second promote: %+v", o)
	}
	c.check()
}

// A promote does not wait while other requests queue behind it.
func TestProcessorPromoteDoesNotBlockTheQueue(t *testing.T) {
	c := newFake(t, 1, 1)
	c.log.submit(Request{ID: "promote-2", Op: OpPromote, RaftID: 2})
	c.log.submit(c.addRequest("add-3", "n3", OpAdd))
	start := c.clock.Now()
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	if waited := c.clock.Now().Sub(start); waited != 0 {
		t.Fatalf("waited %v with a request queued behind", waited)
	}
	if o := c.outcome("promote-2"); o.Code != CodeNotReady {
		t.Fatalf("promote: %+v", o)
	}
	c.check()
}

// A thousand queued requests behind one that cannot succeed: every one is
// decided in one pass, nothing waits, and the next pass reads nothing
// again.
func TestProcessorThousandQueuedBehindAFailingOne(t *testing.T) {
	c := newFake(t, 1, 1)
	c.log.submit(Request{ID: "rm-leader", Op: OpRemove, RaftID: 1}) // the only voter
	c.log.submit(Request{ID: "promote-lagging", Op: OpPromote, RaftID: 2})
	for i := range 998 {
		if i%2 == 0 {
			c.log.submit(c.addRequest(fmt.Sprintf("add-%d", i), fmt.Sprintf("x%d", i), OpAddLearner))
		} else {
			c.log.submit(Request{ID: fmt.Sprintf("rm-unknown-%d", i), Op: OpRemove, RaftID: HexID(1 << 40)})
		}
	}
	start := c.clock.Now()
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	if waited := c.clock.Now().Sub(start); waited != 0 {
		t.Fatalf("the pass waited %v", waited)
	}
	if o := c.outcome("rm-leader"); o.Code != CodeLastVoter {
		t.Fatalf("front request: %+v", o)
	}
	c.check()
	if st := c.raft.State(); len(st.Members) != 2+499 {
		t.Fatalf("%d members, want %d", len(st.Members), 2+499)
	}
	// A new leader resumes after the last decided sequence.
	c.raft.calls = map[string]int{}
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	if len(c.raft.calls) != 0 {
		t.Fatalf("decided requests evaluated again: %d", len(c.raft.calls))
	}
}

// Leadership moves in the middle of every step of deciding and
// publishing a request: before the proposal, after Raft decided but
// before the answer, after the committed record, after the outcome.
// Whatever the step, every request ends decided exactly once with one
// outcome that agrees with the replicated decision.
func TestProcessorLeaderChangeMidStep(t *testing.T) {
	type step struct {
		name string
		// inject installs the fault on the cluster; it fires once.
		inject func(c *fakeCluster2)
	}
	moveOnce := func(c *fakeCluster2, when func(op string, d Decision, commit bool) bool) {
		fired := false
		c.raft.fault = func(op string, d Decision, commit bool) error {
			if fired || !when(op, d, commit) {
				return nil
			}
			fired = true
			c.raft.setLeader(c.raft.leaderID()%3 + 1)
			return errors.New("fake: leadership lost")
		}
	}
	failPublishOnce := func(c *fakeCluster2, kind Kind) {
		fired := false
		c.log.failPub = func(k Kind, r Record) error {
			if fired || k != kind || (k == KindOutcome && r.Outcome.RequestID != "b") || (k == KindCommitted && r.Committed.RequestID != "b") {
				return nil
			}
			fired = true
			c.raft.setLeader(c.raft.leaderID()%3 + 1)
			return errors.New("fake: stream unavailable")
		}
	}
	steps := []step{
		{"before proposal", func(c *fakeCluster2) {
			moveOnce(c, func(op string, d Decision, commit bool) bool { return d.RequestID == "b" && !commit })
		}},
		{"decided, answer lost", func(c *fakeCluster2) {
			moveOnce(c, func(op string, d Decision, commit bool) bool { return d.RequestID == "b" && commit })
		}},
		{"rejection decided, answer lost", func(c *fakeCluster2) {
			moveOnce(c, func(op string, d Decision, commit bool) bool { return d.RequestID == "c" && commit })
		}},
		{"committed record not published", func(c *fakeCluster2) { failPublishOnce(c, KindCommitted) }},
		{"outcome not published", func(c *fakeCluster2) { failPublishOnce(c, KindOutcome) }},
		{"leader removed: hand-over", func(c *fakeCluster2) {}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			c := newFake(t, 3, 1)
			c.log.submit(c.addRequest("a", "n5", OpAddLearner))
			c.log.submit(Request{ID: "b", Op: OpRemove, RaftID: 4})
			c.log.submit(Request{ID: "c", Op: OpPromote, RaftID: 5}) // lagging: not_ready
			c.log.submit(Request{ID: "d", Op: OpRemove, RaftID: 1})  // the leader
			c.log.submit(c.addRequest("e", "n6", OpAdd))
			s.inject(c)
			c.drain(5)
			c.check()
			if o := c.outcome("b"); o.Status != StatusApplied {
				t.Fatalf("b: %+v", o)
			}
			if o := c.outcome("c"); o.Code != CodeNotReady {
				t.Fatalf("c: %+v", o)
			}
			if o := c.outcome("d"); o.Status != StatusApplied || o.Leader == 1 {
				t.Fatalf("d: %+v", o)
			}
		})
	}
}

// Two operators who saw the same membership race: the first request made
// against that version is applied, the second is rejected as a conflict
// (a decided fact); the same request submitted twice is decided once.
func TestProcessorTwoOperatorsRacing(t *testing.T) {
	c := newFake(t, 3, 0)
	v := c.raft.State().Version
	a, b := c.addRequest("op-a", "n4", OpAdd), c.addRequest("op-b", "n4", OpAdd)
	a.ExpectVersion, b.ExpectVersion = v, v
	c.log.submit(a)
	c.log.submit(b)
	rm := Request{ID: "op-c", Op: OpRemove, RaftID: 3, ExpectVersion: v}
	c.log.submit(rm)
	c.log.submit(rm) // a retry past the de-duplication window
	c.drain(1)
	if o := c.outcome("op-a"); o.Status != StatusApplied {
		t.Fatalf("first operator: %+v", o)
	}
	for _, id := range []string{"op-b", "op-c"} {
		if o := c.outcome(id); o.Code != CodeConflict {
			t.Fatalf("%s: %+v, want a conflict", id, o)
		}
	}
	if n := c.raft.decisions["op-c"]; n != 1 {
		t.Fatalf("op-c decided %d times", n)
	}
	if st := c.raft.State(); len(st.Members) != 4 {
		t.Fatalf("members %+v", st.Members)
	}
}

// Malformed requests and unusable IDs are decided too (under their stream
// sequence), so they never stop or stall the queue.
func TestProcessorMalformedRequests(t *testing.T) {
	c := newFake(t, 1, 0)
	bad := c.log.append(Record{Kind: KindRequest, Invalid: RejectMalformed, Problem: "not JSON"})
	dots := c.log.submit(Request{ID: "has.dots", Op: OpRemove, RaftID: 9})
	c.log.submit(Request{ID: "odd-op", Op: "explode"})
	c.log.submit(Request{ID: "no-key", Op: OpAdd, Incarnation: newParty(t).inc})
	c.drain(1)
	created := c.raft.State().Stream.Created
	for _, id := range []string{requestID(Record{Seq: bad, Invalid: RejectMalformed}, created), requestID(Record{Seq: dots, Invalid: RejectMalformed}, created), "odd-op", "no-key"} {
		if o := c.outcome(id); o.Code != CodeInvalid {
			t.Fatalf("%s: %+v", id, o)
		}
	}
	c.check()
}

// The stream is lost and a new one is bound (the repair): the leader's
// first pass starts the new stream with a baseline of the replicated
// membership, tombstones included, and republishes every outcome, so the
// new stream rebuilds the same membership and later requests work on it.
func TestProcessorStreamLostAndRepublished(t *testing.T) {
	c := newFake(t, 3, 0)
	c.log.submit(c.addRequest("a", "n4", OpAddLearner))
	c.log.submit(Request{ID: "b", Op: OpRemove, RaftID: 2})
	c.log.submit(Request{ID: "c", Op: OpPromote, RaftID: 9})
	c.drain(1)
	c.check()
	want := Rebuild(c.log.snapshot(KindCommitted)).Sorted()

	c.raft.setLeader(3) // not the bootstrap's signer
	c.log = newMemLog()
	repair := c.log.submit(Request{ID: "repair", Op: OpRepairStream})
	if _, err := (fakeNode{f: c.raft, self: c.parties[3], id: 3}).Rebind(context.Background(), Decision{RequestID: "repair", Seq: repair}, "s", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := c.pass(); err != nil {
		t.Fatal(err)
	}
	recs := c.log.snapshot(KindCommitted, KindOutcome)
	if first := c.log.snapshot(KindCommitted)[0].Committed; first.Op != OpBaseline {
		t.Fatalf("the repaired stream starts with %+v", first)
	}
	d := Rebuild(recs)
	if got := d.Sorted(); fmt.Sprint(got) != fmt.Sprint(want) || len(d.Rejected) != 0 || !d.RemovedIDs[2] {
		t.Fatalf("rebuilt %+v (rejected %+v, tombstones %v), want %+v", got, d.Rejected, d.RemovedIDs, want)
	}
	for _, id := range []string{"a", "b", "c", "repair"} {
		c.outcome(id)
	}
	// The new stream carries on.
	c.log.submit(c.addRequest("e", "n5", OpAdd))
	c.drain(1)
	if o := c.outcome("e"); o.Status != StatusApplied {
		t.Fatalf("after the repair: %+v", o)
	}
	c.check()
}

// A repair request on the stream the cluster is bound to is decided
// as a rejection: there is nothing to repair.
func TestProcessorRepairOnBoundStream(t *testing.T) {
	c := newFake(t, 1, 0)
	c.log.submit(Request{ID: "repair", Op: OpRepairStream})
	c.drain(1)
	if o := c.outcome("repair"); o.Code != CodeInvalid {
		t.Fatalf("repair of the bound stream: %+v", o)
	}
	c.check()
}

// `member add --learner --promote-when-caught-up`: the leader promotes the
// learner by itself once it has caught up, as a decision of its own (one,
// under AutoPromoteID), also after a leader change.
func TestProcessorAutoPromotion(t *testing.T) {
	c := newFake(t, 3, 0)
	req := c.addRequest("add-4", "n4", OpAddLearner)
	req.PromoteWhenCaughtUp = true
	c.log.submit(req)
	bad := c.addRequest("add-5", "n5", OpAdd)
	bad.PromoteWhenCaughtUp = true
	c.log.submit(bad)
	c.drain(1)
	if o := c.outcome("add-5"); o.Code != CodeInvalid {
		t.Fatalf("auto-promotion of a voter: %+v", o)
	}
	if m, _ := memberOf(c.raft.State(), 4); !m.Learner || !m.AutoPromote {
		t.Fatalf("member 4: %+v", m)
	}
	if _, ok := c.log.outcomes()[AutoPromoteID(4)]; ok {
		t.Fatal("promoted before it caught up")
	}
	c.raft.caught[4] = true
	c.raft.setLeader(2)
	c.drain(1)
	c.drain(1)
	if o := c.outcome(AutoPromoteID(4)); o.Status != StatusApplied || o.RaftID != 4 {
		t.Fatalf("automatic promotion: %+v", o)
	}
	if m, _ := memberOf(c.raft.State(), 4); m.Learner || m.AutoPromote {
		t.Fatalf("member 4 after promotion: %+v", m)
	}
	if n := c.raft.decisions[AutoPromoteID(4)]; n != 1 {
		t.Fatalf("promotion decided %d times", n)
	}
	c.check()
}

// A change that does not commit in time becomes a not_ready rejection,
// decided through Raft like any other, so the queue moves on; if the
// change commits after all, it is the decision and the rejection is
// refused as a duplicate.
func TestProcessorChangeTimeoutBecomesNotReady(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", late), func(t *testing.T) {
			c := newFake(t, 3, 0)
			fired := false
			c.raft.fault = func(op string, d Decision, commit bool) error {
				if op != "change" || d.RequestID != "slow" || fired || commit != late {
					return nil
				}
				fired = true
				return context.DeadlineExceeded
			}
			c.log.submit(c.addRequest("slow", "n4", OpAdd))
			c.log.submit(c.addRequest("next", "n5", OpAdd))
			if err := c.pass(); err != nil {
				t.Fatal(err)
			}
			o := c.outcome("slow")
			if late && o.Status != StatusApplied || !late && o.Code != CodeNotReady {
				t.Fatalf("slow: %+v", o)
			}
			if o := c.outcome("next"); o.Status != StatusApplied {
				t.Fatalf("next: %+v", o)
			}
			c.check()
		})
	}
}
