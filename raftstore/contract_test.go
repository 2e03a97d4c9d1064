package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestContractMatchesMemoryStorage runs random operation sequences against
// raft.MemoryStorage and a Store side by side and compares every read after
// every operation. Operations on which MemoryStorage panics are checked to
// return ErrOutOfRange from the Store instead (and skipped on the model).
// Some steps close and reopen the store, so the comparison also covers what
// was persisted.
func TestContractMatchesMemoryStorage(t *testing.T) {
	caches := map[string]int64{"default-cache": 0, "tiny-cache": 600, "no-cache": -1}
	for name, cache := range caches {
		for seed := uint64(1); seed <= 6; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", name, seed), func(t *testing.T) {
				t.Parallel()
				runContract(t, seed, Options{NoSync: true, EntryCacheSize: cache}, 250)
			})
		}
	}
}

type contractRun struct {
	t    *testing.T
	rng  *rand.Rand
	dir  string
	opts Options
	mem  *raft.MemoryStorage
	st   *Store
	term uint64
	step int
}

func runContract(t *testing.T, seed uint64, opts Options, steps int) {
	r := &contractRun{
		t:    t,
		rng:  rand.New(rand.NewPCG(seed, seed*7919)),
		dir:  t.TempDir(),
		opts: opts,
		mem:  raft.NewMemoryStorage(),
		term: 1,
	}
	r.st = openT(t, r.dir, opts)
	r.compare()
	for r.step = 0; r.step < steps; r.step++ {
		switch p := r.rng.IntN(100); {
		case p < 55:
			r.save()
		case p < 65:
			r.createSnapshot()
		case p < 75:
			r.compact()
		case p < 80:
			r.applySnapshot()
		case p < 85:
			r.outOfRange()
		default:
			if r.rng.IntN(3) == 0 {
				r.reopen()
			}
		}
		r.compare()
	}
}

func (r *contractRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("step %d: "+format, append([]any{r.step}, args...)...)
}

func (r *contractRun) bounds() (first, last uint64) {
	first, _ = r.mem.FirstIndex()
	last, _ = r.mem.LastIndex()
	return first, last
}

func (r *contractRun) snapIndex() uint64 {
	sn, _ := r.mem.Snapshot()
	return sn.GetMetadata().GetIndex()
}

func (r *contractRun) save() {
	first, last := r.bounds()
	var es []*raftpb.Entry
	if r.rng.IntN(8) != 0 {
		// Start anywhere from a little before the first index (partly
		// compacted) to last+1 (a pure append); below last+1 replaces a
		// suffix, possibly with a new term.
		lo := first
		if lo > 3 {
			lo -= 3
		}
		start := lo + r.rng.Uint64N(last+2-lo)
		if start == 0 {
			start = 1
		}
		if r.rng.IntN(3) == 0 {
			r.term++
		}
		n := 1 + r.rng.IntN(12)
		for i := 0; i < n; i++ {
			data := make([]byte, r.rng.IntN(200))
			for j := range data {
				data[j] = byte(r.rng.Uint32())
			}
			e := &raftpb.Entry{Index: new(start + uint64(i)), Term: new(r.term), Data: data}
			if r.rng.IntN(10) == 0 {
				e.Type = raftpb.EntryConfChange.Enum()
			}
			es = append(es, e)
		}
	}
	var hs *raftpb.HardState
	if r.rng.IntN(2) == 0 {
		hs = hardState(r.term, r.rng.Uint64N(4), r.rng.Uint64N(last+1))
		if err := r.mem.SetHardState(proto.Clone(hs).(*raftpb.HardState)); err != nil {
			r.fatalf("model SetHardState: %v", err)
		}
	}
	if err := r.mem.Append(es); err != nil {
		r.fatalf("model Append: %v", err)
	}
	if err := r.st.Save(hs, es); err != nil {
		r.fatalf("Save: %v", err)
	}
}

func (r *contractRun) createSnapshot() {
	_, last := r.bounds()
	si := r.snapIndex()
	if last < si {
		return // a suffix covered by the snapshot was replaced; raft never does that
	}
	// Mostly valid indexes, sometimes an out-of-date one.
	i := si + r.rng.Uint64N(last-si+1)
	var cs *raftpb.ConfState
	if r.rng.IntN(2) == 0 {
		cs = &raftpb.ConfState{Voters: []uint64{1, 2, r.rng.Uint64N(9) + 3}}
		if r.rng.IntN(3) == 0 {
			cs.Learners = []uint64{20}
			cs.AutoLeave = new(false)
		}
	}
	data := []byte(fmt.Sprintf("state@%d-%d", i, r.rng.Uint32()))
	if r.rng.IntN(6) == 0 {
		data = nil
	}
	ms, merr := r.mem.CreateSnapshot(i, cs, data)
	ss, serr := r.st.CreateSnapshot(i, cs, data)
	if merr != serr {
		r.fatalf("CreateSnapshot(%d): model err %v, store err %v", i, merr, serr)
	}
	if merr == nil {
		r.equalSnap("CreateSnapshot", ms, ss)
		r.coverModel(i, ms.GetMetadata().GetTerm(), false)
	}
}

// coverModel applies to the model the one deliberate difference from
// MemoryStorage: a snapshot install (and, for a store written by an older
// version, a reopen) raises the hard state to cover the snapshot, so that a
// crash before the next Save leaves a store Raft can restart from. The
// commit index rises to the snapshot index; an older term rises to the
// snapshot's, with no vote. onlyIfSet skips a model that has no hard state.
func (r *contractRun) coverModel(index, term uint64, onlyIfSet bool) {
	hs, _, _ := r.mem.InitialState()
	if onlyIfSet && hs == nil {
		return
	}
	want := &raftpb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(max(hs.GetCommit(), index))}
	if hs.GetTerm() < term {
		want.Term, want.Vote = new(term), new(uint64(0))
	}
	if proto.Equal(hs, want) || (hs == nil && want.GetCommit() == 0 && want.GetTerm() == 0) {
		return
	}
	if err := r.mem.SetHardState(want); err != nil {
		r.fatalf("model SetHardState: %v", err)
	}
}

func (r *contractRun) compact() {
	first, _ := r.bounds()
	_, last := r.bounds()
	si := min(r.snapIndex(), last)
	lo := first - 1
	if lo > 2 {
		lo -= 2
	}
	if si < lo {
		return
	}
	ci := lo + r.rng.Uint64N(si-lo+1)
	merr := r.mem.Compact(ci)
	serr := r.st.Compact(ci)
	if merr != serr {
		r.fatalf("Compact(%d): model err %v, store err %v", ci, merr, serr)
	}
}

func (r *contractRun) applySnapshot() {
	_, last := r.bounds()
	si := r.snapIndex()
	index := si + r.rng.Uint64N(max(last, si)+10-si)
	if r.rng.IntN(2) == 0 {
		r.term++
	}
	snap := &raftpb.Snapshot{
		Data: []byte(fmt.Sprintf("leader-state@%d", index)),
		Metadata: &raftpb.SnapshotMetadata{
			Index:     new(index),
			Term:      new(r.term),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
		},
	}
	merr := r.mem.ApplySnapshot(proto.Clone(snap).(*raftpb.Snapshot))
	serr := r.st.ApplySnapshot(snap)
	if merr != serr {
		r.fatalf("ApplySnapshot(%d): model err %v, store err %v", index, merr, serr)
	}
	if merr == nil {
		r.coverModel(index, r.term, false)
	}
}

// outOfRange exercises calls on which MemoryStorage panics.
func (r *contractRun) outOfRange() {
	first, last := r.bounds()
	check := func(what string, err error) {
		r.t.Helper()
		if !errors.Is(err, ErrOutOfRange) {
			r.fatalf("%s: got %v, want ErrOutOfRange", what, err)
		}
	}
	_, err := r.st.Entries(first, last+2, math.MaxUint64)
	check("Entries past last", err)
	if last+1 > first {
		_, err = r.st.Entries(first+1, first, math.MaxUint64)
		check("Entries lo > hi", err)
	}
	_, err = r.st.CreateSnapshot(last+1, nil, nil)
	if r.snapIndex() < last+1 {
		check("CreateSnapshot past last", err)
	}
	check("Save with a gap", r.st.Save(nil, ents(last+2, last+3, r.term)))
	check("Save not contiguous", r.st.Save(nil, []*raftpb.Entry{ent(last+1, r.term, ""), ent(last+3, r.term, "")}))
	if err := r.st.Compact(last + 1); !errors.Is(err, ErrOutOfRange) && !errors.Is(err, ErrCompactBeyondSnapshot) {
		r.fatalf("Compact past last: %v", err)
	}
}

func (r *contractRun) reopen() {
	if err := r.st.Close(); err != nil {
		r.fatalf("Close: %v", err)
	}
	st, err := Open(r.dir, r.opts)
	if err != nil {
		r.fatalf("reopen: %v", err)
	}
	r.t.Cleanup(func() { _ = st.Close() })
	r.st = st
	first, _ := r.bounds()
	term, _ := r.mem.Term(first - 1)
	r.coverModel(first-1, term, true)
}

func (r *contractRun) equalSnap(what string, m, s *raftpb.Snapshot) {
	r.t.Helper()
	m, s = raftpb.EnsureSnapshot(m), raftpb.EnsureSnapshot(s)
	if !proto.Equal(m.GetMetadata(), s.GetMetadata()) || !bytes.Equal(m.GetData(), s.GetData()) {
		r.fatalf("%s: model %v, store %v", what, m, s)
	}
}

// compare checks every read of the store against the model.
func (r *contractRun) compare() {
	r.t.Helper()
	mf, _ := r.mem.FirstIndex()
	ml, _ := r.mem.LastIndex()
	sf, err := r.st.FirstIndex()
	if err != nil || sf != mf {
		r.fatalf("FirstIndex: store %d (%v), model %d", sf, err, mf)
	}
	sl, err := r.st.LastIndex()
	if err != nil || sl != ml {
		r.fatalf("LastIndex: store %d (%v), model %d", sl, err, ml)
	}

	mhs, mcs, _ := r.mem.InitialState()
	shs, scs, err := r.st.InitialState()
	if err != nil {
		r.fatalf("InitialState: %v", err)
	}
	if (mhs == nil) != (shs == nil) || !proto.Equal(mhs, shs) {
		r.fatalf("hard state: store %v, model %v", shs, mhs)
	}
	if !proto.Equal(mcs, scs) {
		r.fatalf("conf state: store %v, model %v", scs, mcs)
	}

	ms, _ := r.mem.Snapshot()
	ss, err := r.st.Snapshot()
	if err != nil {
		r.fatalf("Snapshot: %v", err)
	}
	r.equalSnap("Snapshot", ms, ss)

	lo := uint64(0)
	if mf > 3 {
		lo = mf - 3
	}
	for i := lo; i <= ml+3; i++ {
		mt, merr := r.mem.Term(i)
		st, serr := r.st.Term(i)
		if mt != st || merr != serr {
			r.fatalf("Term(%d): store %d %v, model %d %v", i, st, serr, mt, merr)
		}
	}

	// Entries over random ranges and size limits, plus the whole log.
	type q struct{ lo, hi, max uint64 }
	qs := []q{{mf, ml + 1, math.MaxUint64}, {mf, ml + 1, 0}}
	if mf > 1 {
		qs = append(qs, q{mf - 1, ml + 1, math.MaxUint64})
	}
	for k := 0; k < 6; k++ {
		a := lo + r.rng.Uint64N(ml+2-lo)
		b := a + r.rng.Uint64N(ml+2-a)
		qs = append(qs, q{a, b, []uint64{0, 100, 400, 2000, math.MaxUint64}[r.rng.IntN(5)]})
	}
	for _, q := range qs {
		me, merr := r.mem.Entries(q.lo, q.hi, q.max)
		se, serr := r.st.Entries(q.lo, q.hi, q.max)
		if merr != serr {
			r.fatalf("Entries(%d,%d,%d): store err %v, model err %v", q.lo, q.hi, q.max, serr, merr)
		}
		if len(me) != len(se) {
			r.fatalf("Entries(%d,%d,%d): store %d entries, model %d", q.lo, q.hi, q.max, len(se), len(me))
		}
		for i := range me {
			if !proto.Equal(me[i], se[i]) {
				r.fatalf("Entries(%d,%d,%d)[%d]: store %v, model %v", q.lo, q.hi, q.max, i, se[i], me[i])
			}
		}
	}
}
