package raftstore

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	raftpb "go.etcd.io/raft/v3/raftpb"
)

// The power-loss tests run the store on Pebble's strict in-memory file
// system (vfs.NewCrashableMem), whose CrashClone keeps only what was
// fsynced (and, on request, a random part of what was not), behind an
// error-injecting file system (vfs/errorfs) that simulates the power loss
// at a chosen operation: from that operation on, every write, sync, create,
// rename and remove fails. The store must return an error (never panic),
// and the store reopened on the crash image must be exactly the store after
// some prefix of the workload's operations, no shorter than the last
// operation acknowledged with fsync: every acknowledged Save is present and
// every operation is atomic.

const crashDir = "/store"

// errPowerLoss is what every write returns after the crash in the
// failing mode.
var errPowerLoss = errors.New("simulated power loss")

// crashFS is the file system of one simulated power loss. It numbers the
// mutating operations (writes, syncs, creates, renames, removes, locks) and,
// just before the crashAt-th one runs, takes the crash image: what the disk
// would hold if the power went out then. In the failing mode that operation
// and every later one also fail (the store sees the I/O errors and must
// stop); otherwise the run goes on unaware, as the machine would have up to
// the instant of the power loss.
type crashFS struct {
	mem     *vfs.MemFS
	fs      vfs.FS
	crashAt int64 // 0: never
	failing bool
	torn    bool // keep a random half of the unsynced data in the image

	armed   atomic.Bool  // count operations only once armed
	ops     atomic.Int64 // mutating operations seen so far
	started atomic.Int64 // steps started (the runner sets it before each step)
	acked   atomic.Int64 // steps that returned nil with fsync (state index)

	image  *vfs.MemFS // set at the crash
	lo, hi int        // at the crash: the state index range it may be in
	failed bool       // a step returned an error (failing mode)
}

func newCrashFS(crashAt int64, failing, torn bool) *crashFS {
	c := &crashFS{mem: vfs.NewCrashableMem(), crashAt: crashAt, failing: failing, torn: torn}
	c.fs = errorfs.Wrap(c.mem, errorfs.InjectorFunc(c.inject))
	return c
}

func (c *crashFS) inject(op errorfs.Op) error {
	if op.Kind.ReadOrWrite() != errorfs.OpIsWrite || !c.armed.Load() {
		return nil
	}
	n := c.ops.Add(1)
	if n == c.crashAt {
		cfg := vfs.CrashCloneCfg{}
		if c.torn {
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(n), 8))}
		}
		// lo before hi: a step acknowledged meanwhile only makes lo smaller
		// than it could be, never hi too small.
		c.lo = int(c.acked.Load())
		c.image = c.mem.CrashClone(cfg)
		c.hi = int(c.started.Load())
	}
	if c.failing && c.crashAt > 0 && n >= c.crashAt {
		return errPowerLoss
	}
	return nil
}

// crashStep is one operation of the workload.
type crashStep struct {
	name   string
	synced bool // acknowledged only once fsynced (Save, snapshots)
	run    func(s *Store) error
}

func snapOf(index, term uint64, data []byte, voters ...uint64) *raftpb.Snapshot {
	return &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
		Index: new(index), Term: new(term), ConfState: &raftpb.ConfState{Voters: voters},
	}}
}

func blob(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// crashWorkload covers every write path: appends, a conflicting suffix, a
// commit-only save, local snapshots with and without a new conf state,
// compactions, and received snapshots with and without data, the last ones
// followed by the Save of their Ready (the crash between the two is issue
// 8, item 3).
func crashWorkload() []crashStep {
	save := func(hs *raftpb.HardState, es []*raftpb.Entry) func(*Store) error {
		return func(s *Store) error { return s.Save(hs, es) }
	}
	create := func(i uint64, cs *raftpb.ConfState, data []byte) func(*Store) error {
		return func(s *Store) error { _, err := s.CreateSnapshot(i, cs, data); return err }
	}
	return []crashStep{
		{"save 1-5", true, save(hardState(1, 1, 0), ents(1, 5, 1))},
		{"save 6-10", true, save(hardState(1, 1, 3), ents(6, 10, 1))},
		{"save commit 8", false, func(s *Store) error { return s.SaveCommit(hardState(1, 1, 8)) }},
		{"create snapshot 8", true, create(8, &raftpb.ConfState{Voters: []uint64{1, 2, 3}}, blob(3000, 1))},
		{"compact 6", false, func(s *Store) error { return s.Compact(6) }},
		{"save 11-14 term 2", true, save(hardState(2, 2, 10), ents(11, 14, 2))},
		{"save 13-15 term 3 (conflict)", true, save(hardState(3, 3, 12), ents(13, 15, 3))},
		{"apply snapshot 30", true, func(s *Store) error { return s.ApplySnapshot(snapOf(30, 4, blob(5000, 2), 1, 2, 3, 4)) }},
		{"save 31-33", true, save(hardState(4, 1, 30), ents(31, 33, 4))},
		{"create snapshot 32", true, create(32, nil, blob(4000, 3))},
		{"compact 31", false, func(s *Store) error { return s.Compact(31) }},
		{"save 34", true, save(hardState(4, 1, 33), ents(34, 34, 4))},
		{"apply empty snapshot 40", true, func(s *Store) error { return s.ApplySnapshot(snapOf(40, 5, nil, 1, 2, 3)) }},
		{"save 41", true, save(hardState(5, 2, 40), ents(41, 41, 5))},
	}
}

// fingerprint describes everything a store returns through raft.Storage.
func fingerprint(s *Store) (string, error) {
	var b strings.Builder
	hs, cs, err := s.InitialState()
	if err != nil {
		return "", err
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	t0, err := s.Term(first - 1)
	if err != nil {
		return "", fmt.Errorf("Term(%d): %w", first-1, err)
	}
	fmt.Fprintf(&b, "hs{%v} cs{%v} log (%d/%d, %d]", hs, cs, first-1, t0, last)
	if last >= first {
		es, err := s.Entries(first, last+1, math.MaxUint64)
		if err != nil {
			return "", fmt.Errorf("Entries: %w", err)
		}
		for _, e := range es {
			fmt.Fprintf(&b, " %d/%d/%08x", e.GetIndex(), e.GetTerm(), crc32.ChecksumIEEE(e.GetData()))
		}
	}
	sn, err := s.Snapshot()
	if err != nil {
		return "", fmt.Errorf("Snapshot: %w", err)
	}
	fmt.Fprintf(&b, " snap{%v} data %d/%08x", sn.GetMetadata(), len(sn.GetData()), crc32.ChecksumIEEE(sn.GetData()))
	return b.String(), nil
}

// referenceStates runs the workload without faults and returns the
// fingerprint of the store after Open and after each step.
func referenceStates(t *testing.T, steps []crashStep) []string {
	t.Helper()
	s, err := Open(crashDir, Options{fs: vfs.NewMem(), Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var fps []string
	for i := -1; i < len(steps); i++ {
		if i >= 0 {
			if err := steps[i].run(s); err != nil {
				t.Fatalf("reference run, %s: %v", steps[i].name, err)
			}
		}
		fp, err := fingerprint(s)
		if err != nil {
			t.Fatalf("reference run: %v", err)
		}
		fps = append(fps, fp)
	}
	return fps
}

// runWorkload runs the workload on c in the layout l, stopping at the first
// failed step, which must be a sticky ErrFailed, for the other groups of a
// Host too. Only the clean mode counts the operations of Open (of creating
// the group, in a Host). In the failing mode an Open on a disk that keeps
// failing never returns (Pebble retries a failed flush forever). In the
// torn mode Pebble itself does not survive every image of a new database:
// it creates its MANIFEST and the marker naming it without a directory
// fsync between them, and an image may keep the marker without the
// MANIFEST; a journaling file system keeps the two in order.
func runWorkload(t *testing.T, c *crashFS, steps []crashStep, l *crashLayout) {
	t.Helper()
	s, siblings, closeAll := l.open(t, c)
	defer func() {
		if err := closeAll(); err != nil && !c.failing {
			t.Errorf("Close: %v", err)
		}
	}()
	c.armed.Store(true)
	for i, st := range steps {
		c.started.Store(int64(i + 1))
		if err := st.run(s); err != nil {
			if !c.failing || !errors.Is(err, ErrFailed) || !errors.Is(err, errPowerLoss) {
				t.Fatalf("%s: crash at op %d (failing=%v): %s: %v, want ErrFailed wrapping the I/O error", l.name, c.crashAt, c.failing, st.name, err)
			}
			c.failed = true
			// Sticky: nothing more is accepted, even when the disk works,
			// nor by the other groups sharing the disk.
			for _, s := range append([]*Store{s}, siblings...) {
				if err := s.Save(nil, ents(1000, 1000, 9)); !errors.Is(err, ErrFailed) {
					t.Fatalf("%s: crash at op %d: group %d Save after a failed %s: %v, want ErrFailed", l.name, c.crashAt, s.Group(), st.name, err)
				}
			}
			return
		}
		if st.synced {
			c.acked.Store(int64(i + 1))
		}
	}
}

// crashLayout is where the power-loss workload runs.
type crashLayout struct {
	name string
	// open opens the workload's store on c.fs, arming c for the operations
	// that are crash points, and returns the other open groups and what
	// closes everything.
	open func(t *testing.T, c *crashFS) (s *Store, siblings []*Store, closeAll func() error)
	// reopen opens the workload's store on a crash image, after checking
	// whatever else the image holds.
	reopen func(t *testing.T, where string, image vfs.FS) (s *Store, closeAll func() error)
}

// storeLayout runs the workload in a store of Open, whose opening is a
// crash point too (in the clean mode; see runWorkload).
func storeLayout() *crashLayout {
	return &crashLayout{
		name: "Open",
		open: func(t *testing.T, c *crashFS) (*Store, []*Store, func() error) {
			c.armed.Store(!c.failing && !c.torn)
			s, err := Open(crashDir, Options{fs: c.fs, Logger: nopLogger()})
			if err != nil {
				t.Fatalf("crash at op %d: Open: %v", c.crashAt, err)
			}
			return s, nil, s.Close
		},
		reopen: func(t *testing.T, where string, image vfs.FS) (*Store, func() error) {
			s, err := Open(crashDir, Options{fs: image, Logger: nopLogger()})
			if err != nil {
				t.Fatalf("%s: reopen: %v", where, err)
			}
			return s, s.Close
		},
	}
}

// hostLayout runs the workload in group crashGroup of a Host whose other
// groups (0, unprefixed, and the prefixes on either side) hold logs and
// snapshots at the same indexes and stay open and idle. Their state is
// durable before the first crash point, which is the creation of the
// workload's group (in the clean mode), and must survive every crash
// unchanged.
func hostLayout() *crashLayout {
	const crashGroup = 5
	others := []uint64{0, crashGroup - 1, crashGroup + 1}
	want := map[uint64]string{}
	var h *Host
	l := &crashLayout{name: fmt.Sprintf("Host group %d", crashGroup)}
	l.open = func(t *testing.T, c *crashFS) (*Store, []*Store, func() error) {
		var err error
		if h, err = OpenHost(crashDir, Options{fs: c.fs, Logger: nopLogger()}); err != nil {
			t.Fatal(err)
		}
		var siblings []*Store
		for _, g := range others {
			o := groupT(t, h, g)
			mustSave(t, o, hardState(2, 1, 30), groupEnts(g, 1, 50, 2, "other"))
			if _, err := o.CreateSnapshot(30, &raftpb.ConfState{Voters: []uint64{1, g + 2}}, blob(2000, byte(g))); err != nil {
				t.Fatal(err)
			}
			if err := o.Compact(20); err != nil {
				t.Fatal(err)
			}
			mustSave(t, o, hardState(2, 1, 35), nil) // synced: the compaction is durable too
			dump := fullDump(t, o)
			if w, ok := want[g]; ok && w != dump {
				t.Fatalf("group %d set up differently in two runs", g)
			}
			want[g] = dump
			siblings = append(siblings, o)
		}
		c.armed.Store(!c.failing && !c.torn)
		s, err := h.Group(crashGroup)
		if err != nil {
			t.Fatalf("crash at op %d: Group(%d): %v", c.crashAt, crashGroup, err)
		}
		return s, siblings, h.Close
	}
	l.reopen = func(t *testing.T, where string, image vfs.FS) (*Store, func() error) {
		rh, err := OpenHost(crashDir, Options{fs: image, Logger: nopLogger()})
		if err != nil {
			t.Fatalf("%s: reopen: %v", where, err)
		}
		gs, err := rh.Groups()
		if err != nil {
			t.Fatalf("%s: Groups: %v", where, err)
		}
		if w := []uint64{0, crashGroup - 1, crashGroup + 1}; !slices.Equal(gs, w) && !slices.Equal(gs, []uint64{0, crashGroup - 1, crashGroup, crashGroup + 1}) {
			t.Fatalf("%s: Groups() = %v, want %v with or without %d", where, gs, w, crashGroup)
		}
		for _, g := range others {
			if got := fullDump(t, groupT(t, rh, g)); got != want[g] {
				t.Fatalf("%s: group %d changed\n got: %s\nwant: %s", where, g, got, want[g])
			}
		}
		s, err := rh.Group(crashGroup)
		if err != nil {
			t.Fatalf("%s: Group(%d): %v", where, crashGroup, err)
		}
		return s, rh.Close
	}
	return l
}

// TestPowerLossAtEveryStep loses power before every mutating file-system
// operation of the workload in turn (Open, Save, SaveCommit,
// CreateSnapshot with its data file, Compact, ApplySnapshot, Close): once
// keeping only synced data, once also a random half of the unsynced blocks
// and directory entries, and once with the operation and all later ones
// failing, so that the error paths run before the power goes. Each time the
// store reopened on the crash image must restart Raft and be in a state
// the workload went through, no older than its last acknowledged step. All
// of it runs twice: in a store of Open, and in a group of a Host whose
// other groups, with logs at the same indexes, must come through every
// crash unchanged (and, once a step fails, fail too).
func TestPowerLossAtEveryStep(t *testing.T) {
	steps := crashWorkload()
	ref := referenceStates(t, steps)
	start := time.Now()
	images, failures := 0, 0
	for _, l := range []*crashLayout{storeLayout(), hostLayout()} {
		for _, mode := range []struct{ failing, torn bool }{{false, false}, {false, true}, {true, false}} {
			dry := newCrashFS(0, mode.failing, mode.torn)
			runWorkload(t, dry, steps, l)
			total := dry.ops.Load()
			for at := int64(1); at <= total; at++ {
				c := newCrashFS(at, mode.failing, mode.torn)
				runWorkload(t, c, steps, l)
				if c.image == nil {
					continue // the run took fewer operations than the dry one
				}
				checkCrashImage(t, c, ref, l)
				images++
				if c.failed {
					failures++
				}
			}
			t.Logf("%s: failing=%v torn=%v: %d mutating operations", l.name, mode.failing, mode.torn, total)
		}
	}
	t.Logf("%d crash images checked (%d after a step failed with ErrFailed) in %v", images, failures, time.Since(start))
	if failures == 0 {
		t.Fatal("no step ever failed: the failing mode tested nothing")
	}
}

func checkCrashImage(t *testing.T, c *crashFS, ref []string, l *crashLayout) {
	t.Helper()
	where := fmt.Sprintf("%s: power lost at op %d (failing=%v torn=%v), acknowledged %d, started %d",
		l.name, c.crashAt, c.failing, c.torn, c.lo, c.hi)
	s, closeAll := l.reopen(t, where, c.image)
	defer func() { _ = closeAll() }()
	if err := checkRaftRestarts(s); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	fp, err := fingerprint(s)
	if err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	found := false
	for k := c.lo; k <= c.hi; k++ {
		found = found || fp == ref[k]
	}
	if !found {
		t.Fatalf("%s: the recovered store matches no state in %d..%d\n got: %s\nwant: %s",
			where, c.lo, c.hi, fp, strings.Join(ref[c.lo:c.hi+1], "\n  or: "))
	}
	// Leftovers of the interrupted snapshot write are gone or ignored.
	names, err := c.image.List(s.snaps.dir)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, snapTmpSuffix) {
			t.Fatalf("%s: Open left the temp file %s", where, n)
		}
	}
	// The recovered store takes writes again.
	last, _ := s.LastIndex()
	hs, _, _ := s.InitialState()
	mustSave(t, s, hardState(max(hs.GetTerm(), 9), 1, hs.GetCommit()), ents(last+1, last+2, 9))
}
