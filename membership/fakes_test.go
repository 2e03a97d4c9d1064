package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The request processor's tests run against two in-memory fakes: memLog
// (the stream) and fakeRaft (the replicated membership with the node's
// decision rules). Nothing sleeps: the clock is driven by the processor's
// own waits.

// memLog is an in-memory membership stream. Writers are parties; records
// carry Source and Signer as Stream.check would set them.
type memLog struct {
	mu      sync.Mutex
	recs    []Record
	as      party // who publishes node records through this view
	shared  *memLog
	failPub func(kind Kind, r Record) error // injected publish failure
}

func newMemLog() *memLog {
	l := &memLog{}
	l.shared = l
	return l
}

// view returns the log as written by p.
func (l *memLog) view(p party) *memLog { return &memLog{as: p, shared: l.shared} }

func (l *memLog) append(r Record) uint64 {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	r.V, r.Seq = FormatVersion, uint64(len(s.recs)+1)
	s.recs = append(s.recs, r)
	return r.Seq
}

func (l *memLog) submit(r Request) uint64 { return l.append(Record{Kind: KindRequest, Request: &r}) }

func (l *memLog) snapshot(kinds ...Kind) []Record {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.recs {
		if len(kinds) == 0 || slices.Contains(kinds, r.Kind) {
			out = append(out, r)
		}
	}
	return out
}

// Watch delivers the records present when called, then returns: the
// tests drive one pass over a known queue.
func (l *memLog) Watch(ctx context.Context, from uint64, fn func(Record) bool, kinds ...Kind) error {
	recs := l.snapshot(kinds...)
	for i, r := range recs {
		if r.Seq < from {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.Pending = uint64(len(recs) - i - 1)
		if !fn(r) {
			return nil
		}
	}
	return nil
}

func (l *memLog) ReadAll(_ context.Context, kinds ...Kind) ([]Record, error) {
	return l.snapshot(kinds...), nil
}

func (l *memLog) publish(kind Kind, r Record) error {
	if f := l.shared.failPub; f != nil {
		if err := f(kind, r); err != nil {
			return err
		}
	}
	r.Kind, r.Source, r.Signer = kind, l.as.inc, l.as.pub
	l.append(r)
	return nil
}

func (l *memLog) PublishOutcome(_ context.Context, o Outcome) error {
	return l.publish(KindOutcome, Record{Outcome: &o})
}

func (l *memLog) PublishCommitted(_ context.Context, c Committed) error {
	return l.publish(KindCommitted, Record{Committed: &c})
}

func (l *memLog) outcomes() map[string][]Outcome {
	out := map[string][]Outcome{}
	for _, r := range l.snapshot(KindOutcome) {
		out[r.Outcome.RequestID] = append(out[r.Outcome.RequestID], *r.Outcome)
	}
	return out
}

// fakeRaft is the replicated membership shared by every node of a fake
// cluster, deciding changes by the node's rules (node.membership). Faults
// are injected per call.
type fakeRaft struct {
	mu     sync.Mutex
	st     State
	leader HexID
	// caught lists learners that are in sync.
	caught map[HexID]bool
	// evaluations counts, per request ID, Change and Reject calls that
	// decided it; decisions must be 1 for every request.
	decisions map[string]int
	calls     map[string]int
	// fault, if set, is consulted before (commit false) and after (commit
	// true) a decision is made; an error it returns is returned by the
	// call. It may move leadership.
	fault func(op string, d Decision, commit bool) error
	// transfer answers TransferLeadership; default: hand over to the
	// lowest other voter.
	transfer func() error
	index    uint64
}

func newFakeRaft(boot ...Member) *fakeRaft {
	f := &fakeRaft{caught: map[HexID]bool{}, decisions: map[string]int{}, calls: map[string]int{},
		st: State{Requests: map[string]uint64{}}}
	for _, m := range boot {
		f.index++
		f.st.Members = append(f.st.Members, m)
		op := OpAdd
		if m.Learner {
			op = OpAddLearner
		}
		f.st.History = append(f.st.History, Settled{Index: f.index, Op: op, Member: m})
		f.st.Version = f.index
		f.st.NextID = max(f.st.NextID, m.ID+1)
	}
	f.leader = boot[0].ID
	return f
}

func (f *fakeRaft) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Members = slices.Clone(st.Members)
	st.History = slices.Clone(st.History)
	st.Requests = maps.Clone(st.Requests)
	st.RemovedIDs = slices.Clone(st.RemovedIDs)
	st.RemovedIncarnations = slices.Clone(st.RemovedIncarnations)
	return st
}

func (f *fakeRaft) setLeader(id HexID) {
	f.mu.Lock()
	f.leader = id
	f.mu.Unlock()
}

func (f *fakeRaft) leaderID() HexID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *fakeRaft) member(id HexID) (int, bool) {
	for i, m := range f.st.Members {
		if m.ID == id {
			return i, true
		}
	}
	return 0, false
}

func (f *fakeRaft) tombstoned(id HexID, inc uuid.UUID) bool {
	for _, h := range f.st.History {
		if h.Rejected == "" && h.Op == OpRemove && (h.Member.ID == id || (inc != uuid.Nil && h.Member.Incarnation == inc)) {
			return true
		}
	}
	return false
}

// verdict applies the node's rules to d. Caller holds the lock.
func (f *fakeRaft) verdict(d Decision) (code, reason string) {
	if d.ExpectVersion != 0 && d.ExpectVersion != f.st.Version {
		return CodeConflict, "version moved"
	}
	if f.tombstoned(d.Member.ID, uuid.Nil) {
		return CodeTombstoned, "raft ID removed"
	}
	i, ok := f.member(d.Member.ID)
	switch d.Op {
	case OpAdd, OpAddLearner:
		if ok || f.tombstoned(0, d.Member.Incarnation) {
			return CodeInvalid, "taken"
		}
	case OpPromote:
		if !ok {
			return CodeNoSuchMember, "no such member"
		}
		if !f.st.Members[i].Learner {
			return CodeInvalid, "already a voter"
		}
	case OpRemove:
		if !ok {
			return CodeNoSuchMember, "no such member"
		}
		if !f.st.Members[i].Learner && voters(f.st) == 1 {
			return CodeLastVoter, "last voter"
		}
	}
	return "", ""
}

// decide records d (rejected when code != ""). Caller holds the lock.
func (f *fakeRaft) decide(d Decision, code, reason string) uint64 {
	f.index++
	f.decisions[d.RequestID]++
	f.st.Requests[d.RequestID] = f.index
	f.st.DecidedSeq = max(f.st.DecidedSeq, d.Seq)
	m := d.Member
	if i, ok := f.member(m.ID); ok && m.Incarnation == uuid.Nil {
		m = f.st.Members[i]
	}
	h := Settled{Index: f.index, Op: d.Op, Member: m, RequestID: d.RequestID, Seq: d.Seq}
	if code != "" {
		h.Rejected, h.Code = reason, code
		f.st.History = append(f.st.History, h)
		return f.index
	}
	switch d.Op {
	case OpAdd, OpAddLearner:
		f.st.Members = append(f.st.Members, d.Member)
		f.st.NextID = max(f.st.NextID, d.Member.ID+1)
	case OpPromote:
		i, _ := f.member(m.ID)
		f.st.Members[i].Learner, f.st.Members[i].AutoPromote = false, false
	case OpRemove:
		i, _ := f.member(m.ID)
		f.st.Members = slices.Delete(f.st.Members, i, i+1)
		f.st.RemovedIDs = append(f.st.RemovedIDs, m.ID)
		f.st.RemovedIncarnations = append(f.st.RemovedIncarnations, m.Incarnation)
	}
	f.st.Version = f.index
	f.st.History = append(f.st.History, h)
	return f.index
}

func (f *fakeRaft) call(op string, d Decision, fn func() (uint64, error)) (uint64, error) {
	f.mu.Lock()
	f.calls[d.RequestID]++
	fault := f.fault
	f.mu.Unlock()
	if fault != nil {
		if err := fault(op, d, false); err != nil {
			return 0, err
		}
	}
	idx, err := fn()
	if fault != nil {
		if ferr := fault(op, d, true); ferr != nil {
			return 0, ferr
		}
	}
	return idx, err
}

func (f *fakeRaft) change(d Decision) (uint64, error) {
	return f.call("change", d, func() (uint64, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if at, done := f.st.Requests[d.RequestID]; done {
			return at, fmt.Errorf("%w: at %d", ErrAlreadySettled, at)
		}
		code, reason := f.verdict(d)
		idx := f.decide(d, code, reason)
		if code != "" {
			return idx, &RejectionError{Code: code, Reason: reason}
		}
		return idx, nil
	})
}

func (f *fakeRaft) reject(d Decision, code, reason string) (uint64, error) {
	return f.call("reject", d, func() (uint64, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if at, done := f.st.Requests[d.RequestID]; done {
			return at, fmt.Errorf("%w: at %d", ErrAlreadySettled, at)
		}
		return f.decide(d, code, reason), nil
	})
}

// node is one member's view of the fake cluster: a Cluster.
type fakeNode struct {
	f    *fakeRaft
	self party
	id   HexID
}

func (n fakeNode) Self() (HexID, uuid.UUID)      { return n.id, n.self.inc }
func (n fakeNode) Leader() HexID                 { return n.f.leaderID() }
func (n fakeNode) State() State                  { return n.f.State() }
func (n fakeNode) Barrier(context.Context) error { return nil }
func (n fakeNode) Change(_ context.Context, d Decision) (uint64, error) {
	if n.Leader() != n.id {
		return 0, errors.New("fake: not the leader")
	}
	return n.f.change(d)
}
func (n fakeNode) Reject(_ context.Context, d Decision, code, reason string) (uint64, error) {
	if n.Leader() != n.id {
		return 0, errors.New("fake: not the leader")
	}
	return n.f.reject(d, code, reason)
}
func (n fakeNode) Bind(context.Context, string, time.Time) error { return nil }
func (n fakeNode) Rebind(_ context.Context, d Decision, _ string, _ time.Time) (uint64, error) {
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if at, done := f.st.Requests[d.RequestID]; done {
		return at, fmt.Errorf("%w: at %d", ErrAlreadySettled, at)
	}
	f.index++
	f.decisions[d.RequestID]++
	f.st.Requests[d.RequestID] = f.index
	f.st.DecidedSeq = 0
	f.st.History = append(f.st.History, Settled{Index: f.index, Op: OpRepairStream, RequestID: d.RequestID, Seq: d.Seq})
	return f.index, nil
}
func (n fakeNode) TransferLeadership(context.Context) error {
	if n.f.transfer != nil {
		return n.f.transfer()
	}
	st := n.f.State()
	for _, m := range st.Members {
		if m.ID != n.id && !m.Learner {
			n.f.setLeader(m.ID)
			return nil
		}
	}
	return errors.New("fake: no other voter")
}
func (n fakeNode) CaughtUp(id HexID) bool {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	return n.f.caught[id]
}
func (n fakeNode) Removed(string) {}

// fakeClock advances only when the processor waits.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err() == nil
}

// cluster is a fake cluster: parties 1..n (voters or learners), the
// replicated state and the stream.
type fakeCluster2 struct {
	t       *testing.T
	parties map[HexID]party
	byInc   map[uuid.UUID]party // every incarnation ever added or asked for
	raft    *fakeRaft
	log     *memLog
	clock   *fakeClock
}

// newFake starts a cluster of voters 1..voters and learners after them,
// with the bootstrap published by member 1.
func newFake(t *testing.T, voters, learners int) *fakeCluster2 {
	c := &fakeCluster2{t: t, parties: map[HexID]party{}, byInc: map[uuid.UUID]party{}, log: newMemLog(), clock: &fakeClock{now: time.Unix(1e9, 0)}}
	var boot []Member
	for i := 1; i <= voters+learners; i++ {
		p := newParty(t)
		c.parties[HexID(i)] = p
		c.byInc[p.inc] = p
		m := p.member(HexID(i), fmt.Sprintf("n%d", i))
		m.Learner = i > voters
		boot = append(boot, m)
	}
	c.raft = newFakeRaft(boot...)
	for _, h := range c.raft.st.History {
		if err := c.log.view(c.parties[1]).PublishCommitted(context.Background(), committedOf(h)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// processor returns member id's request processor.
func (c *fakeCluster2) processor(id HexID) *processor {
	return &processor{cluster: fakeNode{f: c.raft, self: c.parties[id], id: id}, log: c.log.view(c.parties[id]),
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)), self: id,
		promoteWait: 10 * time.Second, poll: 200 * time.Millisecond, changeTimeout: time.Second, transferTimeout: time.Second,
		sleep: c.clock.sleep, now: c.clock.Now}
}

// pass runs the current leader's processor over the queue.
func (c *fakeCluster2) pass() error {
	return c.processor(c.raft.leaderID()).run(context.Background())
}

// drain runs passes until one completes without error (leadership may move
// in between, as the faults dictate); at most n passes.
func (c *fakeCluster2) drain(n int) {
	c.t.Helper()
	var err error
	for range n {
		if err = c.pass(); err == nil {
			return
		}
	}
	c.t.Fatalf("queue not drained after %d passes: %v", n, err)
}

// candidate returns a request adding a fresh incarnation.
func (c *fakeCluster2) addRequest(id, name string, op string) Request {
	p := newParty(c.t)
	c.byInc[p.inc] = p
	return Request{ID: id, Op: op, Name: name, Incarnation: p.inc, PublicKey: p.pub}
}

// check verifies the invariants every test ends with: every request of
// the stream is decided exactly once in replicated state, has exactly one
// accepted outcome that agrees with the decision, and the committed
// records rebuild the replicated membership.
func (c *fakeCluster2) check() {
	c.t.Helper()
	st := c.raft.State()
	outs := c.log.outcomes()
	for _, r := range c.log.snapshot(KindRequest) {
		id := requestID(r, st.Stream.Created)
		if n := c.raft.decisions[id]; n != 1 {
			c.t.Errorf("request %s (seq %d) decided %d times", id, r.Seq, n)
		}
		h, ok := decided(st, id)
		if !ok {
			c.t.Errorf("request %s not decided", id)
			continue
		}
		if len(outs[id]) != 1 {
			c.t.Errorf("request %s has %d outcomes: %+v", id, len(outs[id]), outs[id])
			continue
		}
		o := outs[id][0]
		if (o.Status == StatusRejected) != (h.Rejected != "") || o.Code != h.Code || o.Index != h.Index {
			c.t.Errorf("request %s: outcome %+v, decision %+v", id, o, h)
		}
	}
	if st.DecidedSeq != c.lastRequestSeq() {
		c.t.Errorf("decided seq %d, last request at %d", st.DecidedSeq, c.lastRequestSeq())
	}
	c.attestAll()
	d := Rebuild(c.log.snapshot(KindCommitted, KindOutcome))
	if len(d.Rejected) != 0 {
		c.t.Errorf("stream records rejected: %+v", d.Rejected)
	}
	got := d.Sorted()
	want := slices.Clone(st.Members)
	slices.SortFunc(want, func(a, b Member) int { return int(a.ID) - int(b.ID) })
	if !slices.Equal(got, want) {
		c.t.Errorf("stream rebuilds members %+v; replicated: %+v", got, want)
	}
}

// attestAll plays the followers: every voter writes its own record of
// each change it applied, as of the membership before the change (the
// bootstrap run and a baseline are written by one signer alone).
func (c *fakeCluster2) attestAll() {
	c.t.Helper()
	wrote := map[string]bool{}
	for _, r := range c.log.snapshot(KindCommitted) {
		wrote[fmt.Sprintf("%s/%d", r.Source, r.Committed.Index)] = true
	}
	ctx := context.Background()
	voters := map[HexID]uuid.UUID{}
	for _, h := range c.raft.State().History {
		if h.Rejected != "" || !IsChange(h.Op) {
			continue
		}
		for _, inc := range voters {
			if key := fmt.Sprintf("%s/%d", inc, h.Index); !wrote[key] {
				wrote[key] = true
				if err := c.log.view(c.byInc[inc]).PublishCommitted(ctx, committedOf(h)); err != nil {
					c.t.Fatal(err)
				}
			}
		}
		switch h.Op {
		case OpAdd:
			voters[h.Member.ID] = h.Member.Incarnation
		case OpPromote:
			if m, ok := c.memberAt(h.Member.ID); ok {
				voters[h.Member.ID] = m
			}
		case OpRemove:
			delete(voters, h.Member.ID)
		}
	}
}

// memberAt returns the incarnation the history added id with.
func (c *fakeCluster2) memberAt(id HexID) (uuid.UUID, bool) {
	for _, h := range c.raft.State().History {
		if h.Member.ID == id && (h.Op == OpAdd || h.Op == OpAddLearner) && h.Rejected == "" {
			return h.Member.Incarnation, true
		}
	}
	return uuid.Nil, false
}

func (c *fakeCluster2) lastRequestSeq() uint64 {
	recs := c.log.snapshot(KindRequest)
	if len(recs) == 0 {
		return 0
	}
	return recs[len(recs)-1].Seq
}

func (c *fakeCluster2) outcome(id string) Outcome {
	c.t.Helper()
	o := c.log.outcomes()[id]
	if len(o) != 1 {
		c.t.Fatalf("request %s: outcomes %+v", id, o)
	}
	return o[0]
}
