package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
)

// Every operator request is decided once, as a replicated fact: a leader's
// rejection (a system entry) and a change rejected when applied both
// record the request, and neither can be overturned by a later proposal
// of the same request.
func TestDecisionsAreReplicatedFacts(t *testing.T) {
	ms := newMembership()
	a, b := newMember(t, 1), newMember(t, 2)
	for i, m := range []Member{a, b} {
		if err := ms.decide(uint64(i+1), change(raftpb.ConfChangeAddNode, uint64(m.ID)), &confContext{Member: &m}); err != nil {
			t.Fatal(err)
		}
	}
	// A promote rejected by the leader as not ready (stream sequence 7).
	rej := Rejection{RequestID: "p1", Seq: 7, Op: OpPromote, Member: Member{ID: 2}, Code: "not_ready", Reason: "lagging"}
	if err := ms.reject(3, rej); err != nil {
		t.Fatal(err)
	}
	if err := ms.reject(3, rej); err != nil {
		t.Fatalf("replay of the deciding entry: %v", err)
	}
	if err := ms.reject(4, rej); !errors.Is(err, ErrDuplicateRequest) {
		t.Fatalf("second rejection: %v", err)
	}
	// The same request proposed as a change later (a leader that had not
	// applied the rejection yet) is refused when applied.
	if err := ms.decide(5, change(raftpb.ConfChangeRemoveNode, 2), &confContext{RequestID: "p1", Seq: 7}); !errors.Is(err, ErrDuplicateRequest) {
		t.Fatalf("decided request applied again: %v", err)
	}
	if ms.members[2] == nil {
		t.Fatal("member 2 removed by a decided request")
	}
	// A change made against an old version is a conflict, decided when
	// applied, against replicated state.
	err := ms.decide(6, change(raftpb.ConfChangeRemoveNode, 2), &confContext{RequestID: "r2", Seq: 9, ExpectVersion: 1})
	if !errors.Is(err, ErrConflict) || RejectionCode(err) != "conflict" {
		t.Fatalf("stale request: %v (code %q)", err, RejectionCode(err))
	}
	if err := ms.decide(7, change(raftpb.ConfChangeRemoveNode, 2), &confContext{RequestID: "r3", Seq: 8, ExpectVersion: 2}); err != nil {
		t.Fatalf("current request: %v", err)
	}
	img := ms.image()
	if img.DecidedSeq != 9 || img.Effective != 7 || img.Version != 7 {
		t.Fatalf("decided seq %d, effective %d, version %d; want 9, 7, 7", img.DecidedSeq, img.Effective, img.Version)
	}
	if img.Requests["p1"] != 3 || img.Requests["r2"] != 6 || img.Requests["r3"] != 7 {
		t.Fatalf("requests %v", img.Requests)
	}
	// The history names the removed member as it was.
	last := img.History[len(img.History)-1]
	if last.Op != OpRemove || last.Member.Incarnation != b.Incarnation || last.Member.Name != b.Name {
		t.Fatalf("removal recorded as %+v", last)
	}
	if h := img.History[2]; h.Index != 3 || h.Code != "not_ready" || h.Seq != 7 || h.Member.Incarnation != b.Incarnation {
		t.Fatalf("rejection recorded as %+v", h)
	}
	// Decisions survive a snapshot.
	restored := newMembership()
	if err := restored.restore(img); err != nil {
		t.Fatal(err)
	}
	if got := restored.image(); got.DecidedSeq != 9 || got.Effective != 7 || len(got.History) != len(img.History) {
		t.Fatalf("restored %+v", got)
	}
	// An image written before decisions were recorded derives the
	// effective version from its history.
	img.Effective = 0
	if err := restored.restore(img); err != nil || restored.effective != 7 {
		t.Fatalf("effective %d (%v), want 7", restored.effective, err)
	}
}

// A rejection entry applied after the directory was primed with later
// changes (a restart) goes into the history at its index.
func TestRejectionHistoryInIndexOrder(t *testing.T) {
	ms := newMembership()
	m := newMember(t, 1)
	if err := ms.decide(5, change(raftpb.ConfChangeAddNode, 1), &confContext{Member: &m}); err != nil {
		t.Fatal(err)
	}
	if err := ms.reject(3, Rejection{RequestID: "x", Op: OpRemove, Member: Member{ID: 9}, Code: "invalid", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	if h := ms.image().History; len(h) != 2 || h[0].Index != 3 || h[1].Index != 5 {
		t.Fatalf("history %+v", h)
	}
}

// Through Raft: a leader's rejection is replicated to every node, and the
// request can then never be carried out.
func TestRejectMembershipReplicated(t *testing.T) {
	h := newHarness(t, nil)
	h.bootstrap(3)
	l := h.elect(1)
	ctx := ctxT(t)
	idx, err := l.node.RejectMembership(ctx, Rejection{RequestID: "req-1", Seq: 42, Op: OpPromote, Member: Member{ID: 3}, Code: "not_ready", Reason: "lagging"})
	if err != nil || idx == 0 {
		t.Fatalf("reject: %d, %v", idx, err)
	}
	if _, err := l.node.RejectMembership(ctx, Rejection{RequestID: "req-1", Op: OpPromote, Code: "invalid", Reason: "again"}); !errors.Is(err, ErrDuplicateRequest) {
		t.Fatalf("second decision: %v", err)
	}
	if _, err := l.node.ChangeMembership(ctx, MembershipChange{RequestID: "req-1", Op: OpRemove, Member: Member{ID: 3}}); !errors.Is(err, ErrDuplicateRequest) {
		t.Fatalf("change of a decided request: %v", err)
	}
	eventually(t, 10*time.Second, l.tick, func() error {
		for _, hn := range h.nodes {
			st := hn.node.Membership()
			if st.Requests["req-1"] != idx || st.DecidedSeq != 42 || len(st.Members) != 3 || st.Version != 3 {
				return fmt.Errorf("%s: requests %v, decided seq %d, %d members, version %d", hn.m.Name, st.Requests, st.DecidedSeq, len(st.Members), st.Version)
			}
		}
		return nil
	})
	if _, err := l.node.RejectMembership(ctx, Rejection{Code: "invalid"}); !errors.Is(err, ErrInvalidChange) {
		t.Fatalf("rejection without an ID: %v", err)
	}
	_ = uuid.Nil
}

// The auto-promote mark of a learner is replicated with its addition and
// cleared by its promotion.
func TestAutoPromoteMarkReplicated(t *testing.T) {
	ms := newMembership()
	a, l := newMember(t, 1), newMember(t, 2)
	l.AutoPromote = true
	if err := ms.decide(1, change(raftpb.ConfChangeAddNode, 1), &confContext{Member: &a}); err != nil {
		t.Fatal(err)
	}
	if err := ms.decide(2, change(raftpb.ConfChangeAddLearnerNode, 2), &confContext{Member: &l}); err != nil {
		t.Fatal(err)
	}
	if m := ms.members[2]; !m.Learner || !m.AutoPromote {
		t.Fatalf("learner %+v", m)
	}
	if err := ms.decide(3, change(raftpb.ConfChangeAddNode, 2), &confContext{RequestID: "promote-0000000000000002"}); err != nil {
		t.Fatal(err)
	}
	if m := ms.members[2]; m.Learner || m.AutoPromote {
		t.Fatalf("promoted member %+v", m)
	}
}

// Raft drops a ConfChange proposed while an earlier one is not yet applied
// as Raft counts it, replacing it with an empty entry and telling no one;
// the apply loop answers a change before the Ready loop advances Raft, so
// an operator's next change right after an answer can land in that window
// (it hung TestRemovedNodeReplacedOnSameName under load). Membership
// changes proposed at once all settle: a dropped one is proposed again
// after an election timeout, and its request ID makes the copies one
// decision.
func TestConcurrentMembershipChangesAllSettle(t *testing.T) {
	h := newHarness(t, nil)
	h.bootstrap(1)
	l := h.elect(1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const n = 6
	errs := make(chan error, n)
	for i := range n {
		m := newMember(t, uint64(10+i))
		m.Learner = true
		go func() {
			_, err := l.node.AddMember(ctx, m)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("add learner: %v", err)
		}
	}
	st := l.node.Membership()
	if len(st.Members) != 1+n {
		t.Fatalf("%d members, want %d", len(st.Members), 1+n)
	}
	effective := 0
	for _, c := range st.History {
		if c.Rejected == "" {
			effective++
		}
	}
	if effective != 1+n {
		t.Fatalf("%d changes took effect, want %d: %v", effective, 1+n, st.History)
	}
	if r := counterValue(l.node.metrics.proposalRetries); r == 0 {
		t.Log("no change needed a second proposal this time")
	}
}
