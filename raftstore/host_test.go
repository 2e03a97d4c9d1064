package raftstore

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// openHostT opens a Host in dir and closes it at the end of the test.
func openHostT(t testing.TB, dir string, opts Options) *Host {
	t.Helper()
	h, err := OpenHost(dir, opts)
	if err != nil {
		t.Fatalf("OpenHost(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func groupT(t testing.TB, h *Host, g uint64) *Store {
	t.Helper()
	s, err := h.Group(g)
	if err != nil {
		t.Fatalf("Group(%d): %v", g, err)
	}
	return s
}

// groupEnts returns entries first..last whose data names the group, so
// that groups with the same indexes differ in every entry.
func groupEnts(g, first, last, term uint64, tag string) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := first; i <= last; i++ {
		out = append(out, ent(i, term, fmt.Sprintf("%s group %d entry %d", tag, g, i)))
	}
	return out
}

// fullDump is everything a store returns through raft.Storage, byte for
// byte: fingerprint's summary plus every encoded entry, every answerable
// term and the snapshot's encoding.
func fullDump(t testing.TB, s *Store) string {
	t.Helper()
	fp, err := fingerprint(s)
	if err != nil {
		t.Fatalf("group %d: %v", s.Group(), err)
	}
	var b strings.Builder
	b.WriteString(fp)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	for i := first - 1; i <= last; i++ {
		term, err := s.Term(i)
		if err != nil {
			t.Fatalf("group %d: Term(%d): %v", s.Group(), i, err)
		}
		fmt.Fprintf(&b, "\nterm(%d)=%d", i, term)
	}
	if last >= first {
		es, err := s.Entries(first, last+1, math.MaxUint64)
		if err != nil {
			t.Fatalf("group %d: Entries: %v", s.Group(), err)
		}
		for _, e := range es {
			v, _ := proto.Marshal(e)
			fmt.Fprintf(&b, "\n%x", v)
		}
	}
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatalf("group %d: Snapshot: %v", s.Group(), err)
	}
	v, _ := proto.Marshal(sn)
	fmt.Fprintf(&b, "\nsnapshot %x", v)
	return b.String()
}

// rawGroup lists the group's keys and values as stored in Pebble.
func rawGroup(t testing.TB, db *pebble.DB, g uint64) string {
	t.Helper()
	var ranges [][2][]byte
	if g == 0 {
		ranges = [][2][]byte{{nil, []byte{groupPrefixByte}}, {[]byte{groupPrefixByte + 1}, nil}}
	} else {
		ranges = [][2][]byte{{groupPrefix(g), groupPrefixEnd(g)}}
	}
	var b strings.Builder
	for _, r := range ranges {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			fmt.Fprintf(&b, "%x=%x\n", it.Key(), it.Value())
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// TestHostGroupsAreIsolated gives groups 0, 1 and 2 the same indexes and
// runs every range operation in group 1 (a conflicting append that deletes
// a suffix, a compaction, snapshots that prune older files, an installed
// snapshot that deletes the whole log): groups 0 (unprefixed) and 2 (the
// next prefix) must stay byte for byte the same, through a reopen, and
// group 1 must end as a lone store with the same history.
func TestHostGroupsAreIsolated(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, Logger: nopLogger()}
	h, err := OpenHost(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	stores := map[uint64]*Store{}
	for _, g := range []uint64{0, 1, 2} {
		s := groupT(t, h, g)
		stores[g] = s
		mustSave(t, s, hardState(g+1, 1, 15), groupEnts(g, 1, 20, g+1, "first"))
		if _, err := s.CreateSnapshot(10, &raftpb.ConfState{Voters: []uint64{1, g + 2}}, blob(500, byte(g))); err != nil {
			t.Fatal(err)
		}
	}
	// The same history on a store of its own, to check group 1 as well.
	lone := openT(t, t.TempDir(), opts)
	mustSave(t, lone, hardState(2, 1, 15), groupEnts(1, 1, 20, 2, "first"))
	if _, err := lone.CreateSnapshot(10, &raftpb.ConfState{Voters: []uint64{1, 3}}, blob(500, 1)); err != nil {
		t.Fatal(err)
	}

	type view struct{ dump, raw string }
	snapshotOf := func() map[uint64]view {
		out := map[uint64]view{}
		for _, g := range []uint64{0, 2} {
			out[g] = view{fullDump(t, stores[g]), rawGroup(t, h.db, g)}
		}
		return out
	}
	want := snapshotOf()
	wantFiles := map[uint64][]string{0: listDir(t, h.snapDirOf(0)), 2: listDir(t, h.snapDirOf(2))}
	check := func(when string) {
		t.Helper()
		got := snapshotOf()
		for _, g := range []uint64{0, 2} {
			if got[g].dump != want[g].dump {
				t.Fatalf("%s: group %d reads differently\n got: %s\nwant: %s", when, g, got[g].dump, want[g].dump)
			}
			if got[g].raw != want[g].raw {
				t.Fatalf("%s: group %d's keys changed\n got: %s\nwant: %s", when, g, got[g].raw, want[g].raw)
			}
			if files := listDir(t, h.snapDirOf(g)); !slices.Equal(files, wantFiles[g]) {
				t.Fatalf("%s: group %d's snapshot files %v, want %v", when, g, files, wantFiles[g])
			}
		}
		if g1, l := fullDump(t, stores[1]), fullDump(t, lone); g1 != l {
			t.Fatalf("%s: group 1 differs from a lone store with its history\n got: %s\nwant: %s", when, g1, l)
		}
	}
	both := func(f func(s *Store) error) {
		t.Helper()
		for _, s := range []*Store{stores[1], lone} {
			if err := f(s); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A shorter conflicting suffix: the entries after it are range-deleted.
	both(func(s *Store) error { return s.Save(hardState(5, 1, 12), groupEnts(1, 12, 14, 5, "conflict")) })
	check("after a conflicting append")
	both(func(s *Store) error {
		_, err := s.CreateSnapshot(13, nil, blob(700, 9))
		return err
	})
	both(func(s *Store) error { return s.Compact(12) })
	check("after Compact")
	// Two more snapshots: pruning removes group 1's older files only.
	both(func(s *Store) error { return s.ApplySnapshot(snapOf(100, 7, blob(900, 3), 1, 2, 3)) })
	both(func(s *Store) error { return s.ApplySnapshot(snapOf(200, 8, blob(900, 4), 1, 2)) })
	check("after ApplySnapshot")
	if n := len(listDir(t, h.snapDirOf(1))); n != DefaultSnapshotsRetained {
		t.Fatalf("group 1 keeps %d snapshot files, want %d", n, DefaultSnapshotsRetained)
	}
	both(func(s *Store) error { return s.Save(hardState(8, 2, 201), groupEnts(1, 201, 203, 8, "after")) })
	check("after the snapshot's Save")

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openHostT(t, dir, opts)
	for _, g := range []uint64{0, 1, 2} {
		stores[g] = groupT(t, h, g)
	}
	check("after reopening")
}

// TestHostGroupZeroIsOpensStore: a directory written by Open is group 0 of
// a Host, and the other way round, and Groups lists what is stored.
func TestHostGroupZeroIsOpensStore(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, Logger: nopLogger()}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(2, 1, 8), ents(1, 10, 2))
	if _, err := s.CreateSnapshot(6, &raftpb.ConfState{Voters: []uint64{1, 2}}, []byte("state at 6")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(4); err != nil {
		t.Fatal(err)
	}
	want := fullDump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, groupsDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created %s (%v): the layout of a lone store must not change", groupsDirName, err)
	}

	h, err := OpenHost(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if gs, err := h.Groups(); err != nil || !slices.Equal(gs, []uint64{0}) {
		t.Fatalf("Groups() = %v, %v; want [0]", gs, err)
	}
	g0 := groupT(t, h, 0)
	if got := fullDump(t, g0); got != want {
		t.Fatalf("group 0 of the Host reads differently from Open\n got: %s\nwant: %s", got, want)
	}
	mustSave(t, g0, hardState(3, 1, 11), ents(11, 12, 3))
	want = fullDump(t, g0)
	for _, g := range []uint64{math.MaxUint64, 3, 256} {
		mustSave(t, groupT(t, h, g), hardState(1, 1, 0), groupEnts(g, 1, 3, 1, "x"))
	}
	_ = groupT(t, h, 9) // created, nothing saved: it has state all the same
	if gs, err := h.Groups(); err != nil || !slices.Equal(gs, []uint64{0, 3, 9, 256, math.MaxUint64}) {
		t.Fatalf("Groups() = %v, %v; want [0 3 9 256 MaxUint64]", gs, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir, opts)
	if got := fullDump(t, s); got != want {
		t.Fatalf("Open reads group 0 of the Host differently\n got: %s\nwant: %s", got, want)
	}
	_ = s.Close()

	// A Host's new directory is one that Open reads.
	dir2 := t.TempDir()
	h = openHostT(t, dir2, opts)
	if gs, err := h.Groups(); err != nil || !slices.Equal(gs, []uint64{0}) {
		t.Fatalf("Groups() of a new Host = %v, %v; want [0]", gs, err)
	}
	g0 = groupT(t, h, 0)
	mustSave(t, g0, hardState(1, 1, 1), ents(1, 2, 1))
	want = fullDump(t, g0)
	mustSave(t, groupT(t, h, 1), hardState(1, 1, 1), groupEnts(1, 1, 5, 1, "y"))
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir2, opts)
	if got := fullDump(t, s); got != want {
		t.Fatalf("Open reads a Host's group 0 differently\n got: %s\nwant: %s", got, want)
	}
}

// slowSyncFS makes every fsync of a WAL file take syncDelay, as on a disk
// with a slow cache flush, so that concurrent commits pile up behind one.
type slowSyncFS struct{ vfs.FS }

const syncDelay = 3 * time.Millisecond

func (fs slowSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return slowWAL(fs.FS.Create(name, c))(c)
}

func (fs slowSyncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return slowWAL(fs.FS.ReuseForWrite(oldname, newname, c))(c)
}

func slowWAL(f vfs.File, err error) func(vfs.DiskWriteCategory) (vfs.File, error) {
	return func(c vfs.DiskWriteCategory) (vfs.File, error) {
		if err != nil || c != walCategory {
			return f, err
		}
		return slowSyncFile{f}, nil
	}
}

type slowSyncFile struct{ vfs.File }

func (f slowSyncFile) Sync() error     { time.Sleep(syncDelay); return f.File.Sync() }
func (f slowSyncFile) SyncData() error { time.Sleep(syncDelay); return f.File.SyncData() }

// TestHostCoalescesFsyncs: 16 groups saving at once, each Save synced,
// cost fewer WAL fsyncs than synced commits, and everything is there
// after a power loss.
func TestHostCoalescesFsyncs(t *testing.T) {
	const groups, saves = 16, 8
	mem := vfs.NewCrashableMem()
	opts := Options{fs: slowSyncFS{mem}, Logger: nopLogger()}
	h := openHostT(t, crashDir, opts)
	stores := make([]*Store, groups)
	for i := range stores {
		stores[i] = groupT(t, h, uint64(i+1))
	}
	before := h.Stats()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for i, s := range stores {
		g := uint64(i + 1)
		wg.Go(func() {
			<-start
			for j := uint64(1); j <= saves; j++ {
				if err := s.Save(hardState(1, 1, j-1), groupEnts(g, j, j, 1, "c")); err != nil {
					errs <- fmt.Errorf("group %d: %w", g, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := h.Stats()
	fsyncs, commits := after.WALFsyncs-before.WALFsyncs, after.SyncedCommits-before.SyncedCommits
	t.Logf("%d groups x %d synced Saves: %d synced commits, %d WAL fsyncs", groups, saves, commits, fsyncs)
	if commits != groups*saves {
		t.Fatalf("%d synced commits counted, want %d", commits, groups*saves)
	}
	if fsyncs == 0 || fsyncs >= commits {
		t.Fatalf("%d WAL fsyncs for %d concurrent synced commits: Pebble did not group them", fsyncs, commits)
	}

	image := mem.CrashClone(vfs.CrashCloneCfg{}) // only what was fsynced
	h2 := openHostT(t, crashDir, Options{fs: image, Logger: nopLogger()})
	for i := range stores {
		g := uint64(i + 1)
		s := groupT(t, h2, g)
		es, err := s.Entries(1, saves+1, math.MaxUint64)
		if err != nil {
			t.Fatalf("group %d after the power loss: %v", g, err)
		}
		want := groupEnts(g, 1, saves, 1, "c")
		for k := range want {
			if !proto.Equal(es[k], want[k]) {
				t.Fatalf("group %d entry %d = %v, want %v", g, k+1, es[k], want[k])
			}
		}
	}
}

// TestHostFailureStopsEveryGroup: a failed WAL fsync in one group's Save
// makes every group of the Host fail with that same error, reads included,
// and nothing more is written for any of them.
func TestHostFailureStopsEveryGroup(t *testing.T) {
	f := newFaultFS(errorfs.ErrInjected, func(op errorfs.Op) bool {
		return isSync(op) && strings.Contains(op.Path, "/"+pebbleDirName+"/")
	})
	opts := Options{fs: f.fs, Logger: nopLogger()}
	h := openHostT(t, crashDir, opts)
	stores := map[uint64]*Store{}
	for _, g := range []uint64{0, 1, 2} {
		stores[g] = groupT(t, h, g)
		mustSave(t, stores[g], hardState(1, 1, 4), groupEnts(g, 1, 5, 1, "ok"))
	}
	f.on.Store(true)
	err := stores[1].Save(hardState(1, 1, 5), groupEnts(1, 6, 6, 1, "lost"))
	if !errors.Is(err, ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Save with a failing fsync: %v, want ErrFailed wrapping the injected error", err)
	}
	f.on.Store(false) // the disk works again; the groups must stop anyway

	for _, g := range []uint64{0, 2, 1} {
		s := stores[g]
		if e := s.Save(hardState(1, 1, 5), groupEnts(g, 6, 6, 1, "after")); e != err {
			t.Fatalf("group %d Save after group 1 failed: %v, want the same error %v", g, e, err)
		}
		if _, e := s.Entries(1, 2, math.MaxUint64); e != err {
			t.Fatalf("group %d Entries after group 1 failed: %v, want %v", g, e, err)
		}
		if _, _, e := s.InitialState(); e != err {
			t.Fatalf("group %d InitialState after group 1 failed: %v, want %v", g, e, err)
		}
		if e := s.Compact(1); e != err {
			t.Fatalf("group %d Compact after group 1 failed: %v, want %v", g, e, err)
		}
	}
	if _, e := h.Group(3); e != err {
		t.Fatalf("Group(3) after a failure: %v, want %v", e, err)
	}

	image := f.mem.CrashClone(vfs.CrashCloneCfg{})
	_ = h.Close()
	h = openHostT(t, crashDir, Options{fs: image, Logger: nopLogger()})
	for _, g := range []uint64{0, 1, 2} {
		s := groupT(t, h, g)
		if last, _ := s.LastIndex(); last != 5 {
			t.Fatalf("group %d after the failure and a power loss: last index %d, want 5", g, last)
		}
	}
}

// TestHostGroupLifecycle: a group opens once at a time, closing one group
// leaves the others working, and Host.Close closes everything, once.
func TestHostGroupLifecycle(t *testing.T) {
	h, err := OpenHost(t.TempDir(), Options{NoSync: true, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	g1, g2 := groupT(t, h, 1), groupT(t, h, 2)
	_, err = h.Group(1)
	if !errors.Is(err, ErrGroupOpen) || !strings.HasPrefix(err.Error(), "raftstore: ") {
		t.Fatalf("second Group(1): %v, want ErrGroupOpen prefixed raftstore:", err)
	}
	mustSave(t, g1, hardState(1, 1, 1), groupEnts(1, 1, 2, 1, "a"))
	mustSave(t, g2, hardState(1, 1, 1), groupEnts(2, 1, 2, 1, "a"))
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g1.Close(); err != nil {
		t.Fatalf("second Close of a group: %v", err)
	}
	if err := g1.Save(nil, groupEnts(1, 3, 3, 1, "a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save on a closed group: %v, want ErrClosed", err)
	}
	mustSave(t, g2, hardState(1, 1, 2), groupEnts(2, 3, 3, 1, "a"))
	if es, err := g2.Entries(1, 4, math.MaxUint64); err != nil || len(es) != 3 {
		t.Fatalf("group 2 after group 1 closed: %d entries, %v", len(es), err)
	}
	if st := h.Stats(); st.OpenGroups != 1 {
		t.Fatalf("Stats().OpenGroups = %d, want 1", st.OpenGroups)
	}
	g1 = groupT(t, h, 1) // released, so it opens again
	if last, err := g1.LastIndex(); err != nil || last != 2 {
		t.Fatalf("group 1 reopened: last index %d, %v; want 2", last, err)
	}

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Host.Close: %v", err)
	}
	for _, s := range []*Store{g1, g2} {
		if _, err := s.LastIndex(); !errors.Is(err, ErrClosed) {
			t.Fatalf("group %d after Host.Close: %v, want ErrClosed", s.Group(), err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("group %d Close after Host.Close: %v", s.Group(), err)
		}
	}
	if _, err := h.Group(3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Group after Host.Close: %v, want ErrClosed", err)
	}
	if _, err := h.Groups(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Groups after Host.Close: %v, want ErrClosed", err)
	}
}

// TestHostMetricsPerGroup: groups on one Registerer export their series
// with a group label, the WAL's once, all promlint-clean; a closed group's
// series go away and it can register again.
func TestHostMetricsPerGroup(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := openHostT(t, t.TempDir(), Options{Registerer: reg, Logger: nopLogger()})
	g1, g2 := groupT(t, h, 1), groupT(t, h, 2)
	mustSave(t, g1, hardState(1, 1, 0), ents(1, 3, 1))
	mustSave(t, g2, hardState(1, 1, 0), ents(1, 1, 1))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	series := func(mfs []*dto.MetricFamily, name string) map[string]float64 {
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "raftbus_raftstore_"+name {
				continue
			}
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				out[strings.Join(labels, ",")] = m.GetCounter().GetValue()
			}
		}
		return out
	}
	if got := series(mfs, "saved_entries_total"); len(got) != 2 || got["group=1"] != 3 || got["group=2"] != 1 {
		t.Fatalf("saved_entries_total = %v, want group=1: 3, group=2: 1", got)
	}
	st := h.Stats()
	if got := series(mfs, "wal_fsyncs_total"); len(got) != 1 || got[""] != float64(st.WALFsyncs) || st.WALFsyncs == 0 {
		t.Fatalf("wal_fsyncs_total = %v, Stats %+v", got, st)
	}
	if got := series(mfs, "synced_commits_total"); len(got) != 1 || got[""] != float64(st.SyncedCommits) || st.SyncedCommits < 4 {
		t.Fatalf("synced_commits_total = %v, Stats %+v", got, st)
	}
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	mfs, _ = reg.Gather()
	if got := series(mfs, "saved_entries_total"); len(got) != 1 {
		t.Fatalf("saved_entries_total after closing group 1 = %v, want group 2's only", got)
	}
	groupT(t, h, 1)
}

// TestHostIdleGroupMemory opens 1,000 groups with one saved entry each and
// reports the heap each costs while idle.
func TestHostIdleGroupMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 groups")
	}
	const groups = 1000
	h := openHostT(t, t.TempDir(), Options{NoSync: true, Logger: nopLogger()})
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	stores := make([]*Store, groups)
	for i := range stores {
		g := uint64(i + 1)
		stores[i] = groupT(t, h, g)
		mustSave(t, stores[i], hardState(1, 1, 1), ents(1, 1, 1))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - int64(before)) / groups
	runtime.KeepAlive(stores)
	t.Logf("heap per idle open group: %d bytes", per)
	if per > 32<<10 {
		t.Fatalf("an idle group costs %d bytes of heap, want at most 32 KiB", per)
	}
}
