package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/internal/testnats"
)

// groupFixture is one cluster's stream shared by Raft groups 0 and 1.
type groupFixture struct {
	t       *testing.T
	js      jetstream.JetStream
	cluster uuid.UUID
}

func newGroupFixture(t *testing.T) *groupFixture {
	t.Helper()
	ns := testnats.Run(t, nil)
	js, err := jetstream.New(testnats.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	f := &groupFixture{t: t, js: js, cluster: uuid.New()}
	if _, err := CreateStream(context.Background(), StreamConfig{JS: js, Cluster: f.cluster}); err != nil {
		t.Fatal(err)
	}
	return f
}

// view opens the stream as group g, writing as p (a reader if p is nil).
func (f *groupFixture) view(g uint64, p *party) *Stream {
	f.t.Helper()
	cfg := StreamConfig{JS: f.js, Cluster: f.cluster, Group: g}
	if p != nil {
		cfg.Incarnation, cfg.Signer = p.inc, p.kp
	}
	s, err := OpenStream(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *groupFixture) subject(parts ...string) string {
	return "raftbus." + f.cluster.String() + ".members." + strings.Join(parts, ".")
}

// read rebuilds group g's directory from every record its readers see.
func (f *groupFixture) read(g uint64) (*Directory, []Record) {
	f.t.Helper()
	recs, err := f.view(g, nil).ReadAll(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return Rebuild(recs), recs
}

// raw returns the stored record at seq.
func (f *groupFixture) raw(seq uint64) *jetstream.RawStreamMsg {
	f.t.Helper()
	st, err := f.js.Stream(context.Background(), StreamName("raftbus", f.cluster))
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), seq)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func (f *groupFixture) publish(s *Stream, c Committed) {
	f.t.Helper()
	if err := s.PublishCommitted(context.Background(), c); err != nil {
		f.t.Fatal(err)
	}
}

func TestGroupTokens(t *testing.T) {
	for tok, want := range map[string][3]any{
		"g1": {uint64(1), true, true}, "g42": {uint64(42), true, true}, "g18446744073709551615": {uint64(1<<64 - 1), true, true},
		"g0": {uint64(0), true, false}, "g01": {uint64(0), true, false}, "g18446744073709551616": {uint64(0), true, false},
		"g": {uint64(0), false, false}, "gx": {uint64(0), false, false}, "committed": {uint64(0), false, false}, "g-1": {uint64(0), false, false},
	} {
		g, isGroup, ok := parseGroupToken(tok)
		if got := [3]any{g, isGroup, ok}; got != want {
			t.Errorf("parseGroupToken(%q) = %v, want %v", tok, got, want)
		}
	}
	if GroupToken(7) != "g7" {
		t.Fatal(GroupToken(7))
	}
}

// Two groups on one stream: each group's readers see only its own
// requests, outcomes and committed records, plus every host's
// announcements; nothing of the other group is read or reported as
// invalid. Group 0's subjects and record bytes are those of a
// single-group cluster.
func TestGroupsShareTheStreamApart(t *testing.T) {
	f := newGroupFixture(t)
	ctx := context.Background()
	n1, n2, n3 := newParty(t), newParty(t), newParty(t)
	g0, g1 := f.view(0, &n1), f.view(1, &n2)
	// Group 0: n1 and n2, bootstrapped by n1. Group 1: n2 and n3,
	// bootstrapped by n2, with its own Raft IDs.
	f.publish(g0, Committed{Index: 1, Op: OpAdd, Member: n1.member(1, "n1"), Version: 1})
	f.publish(g0, Committed{Index: 2, Op: OpAdd, Member: n2.member(2, "n2"), Version: 2})
	f.publish(g1, Committed{Index: 1, Op: OpAdd, Member: n2.member(1, "n2"), Version: 1})
	f.publish(g1, Committed{Index: 2, Op: OpAdd, Member: n3.member(2, "n3"), Version: 2})
	for _, a := range []struct {
		s *Stream
		p party
	}{{g0, n1}, {g1, n2}, {f.view(1, &n3), n3}} {
		if err := a.s.Announce(ctx, Announce{Name: fmt.Sprint("host-", a.p.inc)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.view(1, nil).Submit(ctx, Request{ID: "r1", Op: OpRemove, RaftID: 2}, 0); err != nil {
		t.Fatal(err)
	}
	// Per subject: group 0's last request is none, so this expectation
	// holds although group 1 recorded one.
	if _, err := f.view(0, nil).Submit(ctx, Request{ID: "r0", Op: OpRemove, RaftID: 2}, 0); err != nil {
		t.Fatalf("group 0's first request conflicts with group 1's: %v", err)
	}
	if err := g1.PublishOutcome(ctx, Outcome{RequestID: "r1", Status: StatusRejected, Code: CodeNotReady, Reason: "g1"}); err != nil {
		t.Fatal(err)
	}
	if err := g0.PublishOutcome(ctx, Outcome{RequestID: "r0", Status: StatusRejected, Code: CodeNotReady, Reason: "g0"}); err != nil {
		t.Fatal(err)
	}

	d0, recs0 := f.read(0)
	d1, recs1 := f.read(1)
	for g, c := range map[uint64]struct {
		d    *Directory
		recs []Record
		ids  map[HexID]uuid.UUID
		req  string
	}{0: {d0, recs0, map[HexID]uuid.UUID{1: n1.inc, 2: n2.inc}, "r0"}, 1: {d1, recs1, map[HexID]uuid.UUID{1: n2.inc, 2: n3.inc}, "r1"}} {
		if len(c.d.Rejected) != 0 {
			t.Fatalf("group %d rejected %+v", g, c.d.Rejected)
		}
		if len(c.d.Members) != len(c.ids) {
			t.Fatalf("group %d members %v", g, c.d.Sorted())
		}
		for id, inc := range c.ids {
			if m := c.d.Members[id]; m == nil || m.Incarnation != inc {
				t.Fatalf("group %d member %s = %+v, want incarnation %s", g, id, m, inc)
			}
		}
		if len(c.d.Announced) != 3 {
			t.Fatalf("group %d sees %d announcements, want every host's 3", g, len(c.d.Announced))
		}
		// 2 committed, 3 announcements, 1 request, 1 outcome.
		if len(c.recs) != 7 {
			t.Fatalf("group %d read %d records, want 7", g, len(c.recs))
		}
		for _, r := range c.recs {
			if r.Kind != KindAnnounce && r.Group != g {
				t.Fatalf("group %d read a record of group %d: %s", g, r.Group, r.Subject)
			}
			if r.Kind == KindRequest && r.Request.ID != c.req {
				t.Fatalf("group %d read request %s", g, r.Request.ID)
			}
		}
		s := f.view(g, nil)
		if last, err := s.LastRequestSeq(ctx); err != nil || last == 0 {
			t.Fatalf("group %d last request %d, %v", g, last, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		o, err := s.WaitOutcome(wctx, c.req, c.d)
		cancel()
		if err != nil || o.Reason != fmt.Sprint("g", g) {
			t.Fatalf("group %d outcome %+v, %v", g, o, err)
		}
		// The other group's request has no outcome here.
		other := map[uint64]string{0: "r1", 1: "r0"}[g]
		wctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
		if o, err := s.WaitOutcome(wctx, other, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("group %d sees group %d's outcome %+v (%v)", g, 1-g, o, err)
		}
		cancel()
	}
	if gs, err := f.view(0, nil).Groups(ctx); err != nil || fmt.Sprint(gs) != "[1]" {
		t.Fatalf("groups on the stream: %v, %v", gs, err)
	}
	if d, _ := f.read(0); len(d.Members) != 2 {
		t.Fatal(d.Sorted())
	}
	// InGroup reads another group through the same view.
	if recs, err := f.view(0, nil).InGroup(1).ReadAll(ctx, KindCommitted); err != nil || len(recs) != 2 || recs[0].Group != 1 {
		t.Fatalf("InGroup(1): %d records, %v", len(recs), err)
	}
	// Only group 1's watch delivers its committed records.
	var seen []uint64
	err := f.view(1, nil).Watch(ctx, 1, func(r Record) bool {
		seen = append(seen, r.Seq)
		return len(seen) < 2
	}, KindCommitted)
	if err != nil || len(seen) != 2 || seen[0] != 3 || seen[1] != 4 {
		t.Fatalf("group 1 watch delivered sequences %v (%v), want 3 and 4", seen, err)
	}

	// Group 0's records are on the single-group subjects, without a group
	// in their bytes; group 1's carry g1 in the subject and the body.
	m := f.raw(1)
	if m.Subject != f.subject("committed", n1.inc.String()) || strings.Contains(string(m.Data), `"group"`) {
		t.Fatalf("group 0 record %s: %s", m.Subject, m.Data)
	}
	m = f.raw(3)
	if m.Subject != f.subject("g1", "committed", n2.inc.String()) || !strings.Contains(string(m.Data), `"group":1,`) {
		t.Fatalf("group 1 record %s: %s", m.Subject, m.Data)
	}
	m = f.raw(7)
	if m.Subject != f.subject("announce", n3.inc.String()) || strings.Contains(string(m.Data), `"group"`) {
		t.Fatalf("group 1 host's announcement %s: %s", m.Subject, m.Data)
	}
	if m := f.raw(8); m.Subject != f.subject("g1", "request") {
		t.Fatalf("group 1 request on %s", m.Subject)
	}
	if m := f.raw(10); m.Subject != f.subject("g1", "outcome", "r1", n2.inc.String()) {
		t.Fatalf("group 1 outcome on %s", m.Subject)
	}
}

// A record replayed by its own signer onto another group's subject (a
// valid signature over the new subject) names the group it was written
// for, and that group's readers reject it; the group whose subject carries
// it never applies it.
func TestRecordReplayedIntoAnotherGroupIsRejected(t *testing.T) {
	f := newGroupFixture(t)
	ctx := context.Background()
	n1, n2 := newParty(t), newParty(t)
	g0, g1, g2 := f.view(0, &n1), f.view(1, &n1), f.view(2, &n1)
	for _, s := range []*Stream{g0, g1, g2} {
		f.publish(s, Committed{Index: 1, Op: OpAdd, Member: n1.member(1, "n1"), Version: 1})
		f.publish(s, Committed{Index: 2, Op: OpAdd, Member: n2.member(2, "n2"), Version: 2})
	}
	// n1 removes n2 from group 0 and from group 1: with n2 removed, n1 is
	// the quorum of each.
	f.publish(g0, Committed{Index: 3, Op: OpRemove, Member: n2.member(2, "n2"), Version: 3})
	f.publish(g1, Committed{Index: 3, Op: OpRemove, Member: n2.member(2, "n2"), Version: 3})
	rm0, rm1 := f.raw(7), f.raw(8)
	replay := func(data []byte, subject string) {
		t.Helper()
		h, err := sign(n1.kp, subject, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.js.PublishMsg(ctx, rawMsg(subject, data, h)); err != nil {
			t.Fatal(err)
		}
	}
	// Group 0's removal into group 2 and group 1's into group 2 and 0.
	replay(rm0.Data, f.subject("g2", "committed", n1.inc.String()))
	replay(rm1.Data, f.subject("g2", "committed", n1.inc.String()))
	replay(rm1.Data, f.subject("committed", n1.inc.String()))
	// Group 0's outcome into group 1.
	out, _ := json.Marshal(Record{V: 1, Kind: KindOutcome, Time: time.Now().UTC(), Cluster: f.cluster, Outcome: &Outcome{RequestID: "x", Status: StatusApplied}})
	replay(out, f.subject("g1", "outcome", "x", n1.inc.String()))

	d2, _ := f.read(2)
	if d2.RemovedIDs[2] || d2.Members[2] == nil {
		t.Fatalf("a replayed removal took effect in group 2: members %v, removed %v", d2.Sorted(), d2.RemovedIDs)
	}
	if got := d2.RejectedCounts(); got[RejectWrongSource] != 2 || len(d2.Rejected) != 2 {
		t.Fatalf("group 2 rejections %+v", d2.Rejected)
	}
	for _, rr := range d2.Rejected {
		if !strings.Contains(rr.Problem, "on the subject of group 2") {
			t.Fatalf("group 2 rejection %+v", rr)
		}
	}
	d0, _ := f.read(0)
	if got := d0.RejectedCounts(); got[RejectWrongSource] != 1 || len(d0.Rejected) != 1 || !strings.Contains(d0.Rejected[0].Problem, "record of group 1") {
		t.Fatalf("group 0 rejections %+v", d0.Rejected)
	}
	d1, _ := f.read(1)
	if len(d1.Rejected) != 1 || d1.Rejected[0].Kind != KindOutcome || d1.Rejected[0].Reason != RejectWrongSource {
		t.Fatalf("group 1 rejections %+v", d1.Rejected)
	}
}

func rawMsg(subject string, data []byte, h nats.Header) *nats.Msg {
	return &nats.Msg{Subject: subject, Data: data, Header: h}
}

// Removing a host's member from group 1 tombstones it in group 1 alone:
// its records there stop counting and it is no candidate there any more,
// while its announcement and its membership of group 0 are untouched.
func TestRemovalTombstonesInItsGroupOnly(t *testing.T) {
	f := newGroupFixture(t)
	ctx := context.Background()
	n1, n2 := newParty(t), newParty(t)
	for g := range uint64(2) {
		s := f.view(g, &n1)
		f.publish(s, Committed{Index: 1, Op: OpAdd, Member: n1.member(1, "n1"), Version: 1})
		f.publish(s, Committed{Index: 2, Op: OpAdd, Member: n2.member(2, "n2"), Version: 2})
	}
	f.publish(f.view(1, &n1), Committed{Index: 3, Op: OpRemove, Member: n2.member(2, "n2"), Version: 3})
	if err := f.view(1, &n2).Announce(ctx, Announce{Name: "n2"}); err != nil {
		t.Fatal(err)
	}
	// n2's word in group 1, after its removal, no longer counts.
	f.publish(f.view(1, &n2), Committed{Index: 4, Op: OpPromote, Member: Member{ID: 1}, Version: 4})
	d0, _ := f.read(0)
	d1, _ := f.read(1)
	if !d1.RemovedIDs[2] || !d1.RemovedIncarnations[n2.inc] || d1.Members[2] != nil {
		t.Fatalf("group 1 did not tombstone n2: %v %v", d1.RemovedIDs, d1.RemovedIncarnations)
	}
	if len(d1.Rejected) != 1 || d1.Rejected[0].Reason != RejectNotAuthorized {
		t.Fatalf("group 1 rejections %+v", d1.Rejected)
	}
	if d0.RemovedIDs[2] || d0.RemovedIncarnations[n2.inc] || d0.Members[2] == nil || len(d0.Rejected) != 0 {
		t.Fatalf("group 1's removal reached group 0: removed %v %v, members %v, rejected %+v", d0.RemovedIDs, d0.RemovedIncarnations, d0.Sorted(), d0.Rejected)
	}
	for g, d := range []*Directory{d0, d1} {
		if _, ok := d.Announced[n2.inc]; !ok {
			t.Fatalf("group %d lost n2's announcement", g)
		}
	}
	if _, ok := d1.Candidate("n2"); ok {
		t.Fatal("the tombstoned incarnation is a candidate in group 1")
	}
}

// One manager per group on one host: each decides only its own group's
// requests, through its own group's node, and writes the outcome and the
// committed records in its group; a removal from group 1 stops the
// host's member of group 1 only.
func TestManagerPerGroup(t *testing.T) {
	f := newGroupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n1, n2 := newParty(t), newParty(t)
	rafts := []*fakeRaft{newFakeRaft(n1.member(1, "n1")), newFakeRaft(n1.member(1, "n1"))}
	for g, r := range rafts {
		m, err := StartManager(ManagerConfig{Stream: StreamConfig{JS: f.js, Cluster: f.cluster, Group: uint64(g)},
			Cluster: fakeNode{f: r, self: n1, id: 1}, Signer: n1.kp, Announce: Announce{Name: "n1"}, SkipAnnounce: g != 0,
			Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
	}
	// n2's host: a member of neither group yet, following both.
	followers := []*fakeCluster{{self: 2, inc: n2.inc, ch: make(chan string, 4)}, {self: 2, inc: n2.inc, ch: make(chan string, 4)}}
	var n2managers []*Manager
	for g, c := range followers {
		m, err := StartManager(ManagerConfig{Stream: StreamConfig{JS: f.js, Cluster: f.cluster, Group: uint64(g)},
			Cluster: c, Signer: n2.kp, Announce: Announce{Name: "n2"}, SkipAnnounce: g != 0, Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		n2managers = append(n2managers, m)
	}
	admin := []*Stream{f.view(0, nil), f.view(1, nil)}
	// directory waits until group g's leader published its bootstrap and
	// n2's announcement is in.
	directory := func(g int) *Directory {
		t.Helper()
		var d *Directory
		testnats.Eventually(t, 20*time.Second, func() error {
			recs, err := admin[g].ReadAll(ctx)
			if err != nil {
				return err
			}
			if d = Rebuild(recs); d.Version == 0 || d.Announced[n2.inc].PublicKey == "" {
				return fmt.Errorf("group %d: version %d, announcements %v", g, d.Version, d.Announced)
			}
			return nil
		})
		return d
	}
	submit := func(g int, req Request) Outcome {
		t.Helper()
		d := directory(g)
		last, err := admin[g].LastRequestSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req.ExpectVersion = d.Version
		if _, err := admin[g].Submit(ctx, req, last); err != nil {
			t.Fatal(err)
		}
		o, err := admin[g].WaitOutcome(ctx, req.ID, d)
		if err != nil {
			t.Fatalf("group %d request %s: %v", g, req.ID, err)
		}
		return o
	}
	cand, ok := directory(1).Candidate("n2")
	if !ok {
		t.Fatal("n2's announcement is no candidate in group 1")
	}
	add := Request{ID: "add-n2", Op: OpAdd, Name: "n2", Incarnation: cand.Incarnation, PublicKey: cand.PublicKey}
	if o := submit(1, add); o.Status != StatusApplied || o.RaftID != 2 {
		t.Fatalf("add to group 1: %+v", o)
	}
	if o := submit(1, Request{ID: "rm-n2", Op: OpRemove, RaftID: 2}); o.Status != StatusApplied {
		t.Fatalf("remove from group 1: %+v", o)
	}
	var decisions [2]map[string]int
	for g, r := range rafts {
		r.mu.Lock()
		decisions[g] = maps.Clone(r.decisions)
		r.mu.Unlock()
	}
	if decisions[0]["add-n2"] != 0 || decisions[0]["rm-n2"] != 0 || decisions[1]["add-n2"] != 1 || decisions[1]["rm-n2"] != 1 {
		t.Fatalf("decisions: group 0 %v, group 1 %v", decisions[0], decisions[1])
	}
	select {
	case reason := <-followers[1].ch:
		if !strings.Contains(reason, "removal of member 0000000000000002") {
			t.Fatalf("group 1 member stopped for %q", reason)
		}
	case <-ctx.Done():
		t.Fatal("the verified removal from group 1 did not stop n2's member of group 1")
	}
	// Group 0 goes on: n2 is still a candidate there and is added.
	d0 := directory(0)
	if len(d0.Members) != 1 || len(d0.RemovedIDs) != 0 {
		t.Fatalf("group 0 after group 1's changes: members %v, removed %v", d0.Sorted(), d0.RemovedIDs)
	}
	cand, ok = d0.Candidate("n2")
	if !ok {
		t.Fatal("n2 is no candidate in group 0 after its removal from group 1")
	}
	add.ID = "add-n2-g0"
	if o := submit(0, add); o.Status != StatusApplied || o.RaftID != 2 {
		t.Fatalf("add to group 0: %+v", o)
	}
	// A removal recorded after group 1's, which n2's group-0 follower
	// reads: by then it had read past group 1's removal, had it been
	// delivered, and it must not have stopped.
	forged := newParty(t)
	body, _ := json.Marshal(Record{V: 1, Kind: KindCommitted, Time: time.Now().UTC(), Cluster: f.cluster,
		Committed: &Committed{Index: 99, Op: OpRemove, Member: n2.member(2, "n2"), Version: 99}})
	subj := f.subject("committed", forged.inc.String())
	h, _ := sign(forged.kp, subj, body)
	if _, err := f.js.PublishMsg(ctx, rawMsg(subj, body, h)); err != nil {
		t.Fatal(err)
	}
	testnats.Eventually(t, 20*time.Second, func() error {
		if n := n2managers[0].Rejected()[RejectNotAuthorized]; n != 1 {
			return fmt.Errorf("group 0 follower rejected %v", n2managers[0].Rejected())
		}
		return nil
	})
	followers[0].mu.Lock()
	stopped := followers[0].removed
	followers[0].mu.Unlock()
	if len(stopped) != 0 {
		t.Fatalf("n2's member of group 0 stopped: %v", stopped)
	}
	// One announcement per host: the group-1 managers do not announce.
	recs, err := admin[1].ReadAll(ctx, KindAnnounce)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d announcements, want one per host", len(recs))
	}
	for _, r := range recs {
		if r.Announce.RaftID != 1 && r.Source == n1.inc {
			t.Fatalf("group 0's announcement without its Raft ID: %+v", r.Announce)
		}
	}
}

// The subject parser takes a group token for another group, never for a
// kind: a group's readers skip other groups' records (and tokens that only
// look like a group's) without judging them, and read announcements from
// group 0's subject.
func TestCheckSkipsOtherGroupsSilently(t *testing.T) {
	cluster := uuid.New()
	p := newParty(t)
	body, _ := json.Marshal(Record{V: 1, Kind: KindCommitted, Cluster: cluster, Committed: &Committed{Index: 1, Op: OpAdd}})
	ann, _ := json.Marshal(Record{V: 1, Kind: KindAnnounce, Cluster: cluster, Announce: &Announce{Incarnation: p.inc, PublicKey: p.pub}})
	pre := "raftbus." + cluster.String() + ".members."
	inc := p.inc.String()
	for _, c := range []struct {
		group uint64
		subj  string
		data  []byte
		ours  bool
	}{
		{0, pre + "g1.committed." + inc, body, false},
		{0, pre + "g01.committed." + inc, body, false},
		{0, pre + "g0.committed." + inc, body, false},
		{0, pre + "g1", body, false},
		{1, pre + "committed." + inc, body, false},
		{1, pre + "g2.committed." + inc, body, false},
		{1, pre + "g1", body, true},
		{1, pre + "announce." + inc, ann, true},
		{1, pre + "request", body, false},
		{0, pre + "gossip." + inc, body, true},
	} {
		s := &Stream{cfg: StreamConfig{Prefix: "raftbus", Cluster: cluster, Group: c.group}}
		h, _ := sign(p.kp, c.subj, c.data)
		r, ours := s.check(c.subj, c.data, h, 5)
		if ours != c.ours {
			t.Errorf("group %d reads %s: ours %v, want %v (%+v)", c.group, c.subj, ours, c.ours, r)
		}
		// What is this group's is judged: only the announcement is good.
		if ours && (c.subj == pre+"announce."+inc) != (r.Invalid == "") {
			t.Errorf("group %d reads %s: %+v", c.group, c.subj, r)
		}
	}
}
