package raftstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/raft/v3"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestEmptyStoreMatchesMemoryStorage(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true})
	hs, cs, err := s.InitialState()
	if err != nil || hs != nil || cs == nil || len(cs.GetVoters()) != 0 {
		t.Fatalf("InitialState = %v, %v, %v; want nil, empty, nil", hs, cs, err)
	}
	if f, _ := s.FirstIndex(); f != 1 {
		t.Fatalf("FirstIndex = %d, want 1", f)
	}
	if l, _ := s.LastIndex(); l != 0 {
		t.Fatalf("LastIndex = %d, want 0", l)
	}
	if tm, err := s.Term(0); tm != 0 || err != nil {
		t.Fatalf("Term(0) = %d, %v", tm, err)
	}
	if _, err := s.Term(1); err != raft.ErrUnavailable {
		t.Fatalf("Term(1) err = %v, want ErrUnavailable", err)
	}
	if _, err := s.Entries(1, 1, math.MaxUint64); err != raft.ErrUnavailable {
		t.Fatalf("Entries(1,1) err = %v, want ErrUnavailable", err)
	}
	sn, err := s.Snapshot()
	if err != nil || !raft.IsEmptySnap(sn) || sn.GetMetadata().GetConfState() == nil {
		t.Fatalf("Snapshot = %v, %v; want empty with a conf state", sn, err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(2, 1, 5), ents(1, 10, 2))
	mustSave(t, s, nil, ents(8, 12, 3)) // replaces 8..10, appends 11, 12
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	if _, err := s.CreateSnapshot(6, cs, []byte("snap@6")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(4); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir, Options{})
	hs, gotCS, err := s.InitialState()
	// The snapshot at 6 raised the commit index from 5: what a snapshot
	// covers is committed.
	if err != nil || !proto.Equal(hs, hardState(2, 1, 6)) || !proto.Equal(gotCS, raftpb.EnsureConfState(cs)) {
		t.Fatalf("InitialState = %v, %v, %v", hs, gotCS, err)
	}
	if f, _ := s.FirstIndex(); f != 5 {
		t.Fatalf("FirstIndex = %d, want 5", f)
	}
	if l, _ := s.LastIndex(); l != 12 {
		t.Fatalf("LastIndex = %d, want 12", l)
	}
	for i, want := range map[uint64]uint64{4: 2, 7: 2, 8: 3, 12: 3} {
		if got, err := s.Term(i); got != want || err != nil {
			t.Errorf("Term(%d) = %d, %v; want %d", i, got, err, want)
		}
	}
	if _, err := s.Term(3); err != raft.ErrCompacted {
		t.Errorf("Term(3) err = %v, want ErrCompacted", err)
	}
	es, err := s.Entries(5, 13, math.MaxUint64)
	if err != nil || len(es) != 8 || es[0].GetIndex() != 5 || es[7].GetIndex() != 12 {
		t.Fatalf("Entries(5,13) = %d entries, %v", len(es), err)
	}
	sn, err := s.Snapshot()
	if err != nil || sn.GetMetadata().GetIndex() != 6 || sn.GetMetadata().GetTerm() != 2 || string(sn.GetData()) != "snap@6" {
		t.Fatalf("Snapshot = %v, %v", sn, err)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, nil, ents(1, 3, 1))
	for i := 0; i < 2; i++ {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	checks := map[string]error{}
	_, _, checks["InitialState"] = s.InitialState()
	_, checks["Entries"] = s.Entries(1, 2, 100)
	_, checks["Term"] = s.Term(1)
	_, checks["FirstIndex"] = s.FirstIndex()
	_, checks["LastIndex"] = s.LastIndex()
	_, checks["Snapshot"] = s.Snapshot()
	checks["Save"] = s.Save(hardState(1, 1, 1), nil)
	checks["Compact"] = s.Compact(1)
	checks["ApplySnapshot"] = s.ApplySnapshot(&raftpb.Snapshot{})
	_, checks["CreateSnapshot"] = s.CreateSnapshot(2, nil, nil)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestSecondOpenOfSameDirectoryFails(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{NoSync: true})
	if s, err := Open(dir, Options{NoSync: true}); err == nil {
		_ = s.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
}

func TestSaveEmptyHardStateKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	mustSave(t, s, hardState(3, 2, 1), nil)
	mustSave(t, s, &raftpb.HardState{}, ents(1, 1, 3))
	mustSave(t, s, nil, ents(2, 2, 3))
	hs, _, _ := s.InitialState()
	if !proto.Equal(hs, hardState(3, 2, 1)) {
		t.Fatalf("hard state = %v, want term 3 vote 2 commit 1", hs)
	}
}

func TestReturnedSlicesAreCallerOwned(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true})
	mustSave(t, s, nil, ents(1, 5, 1))
	es, err := s.Entries(1, 3, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(es, ent(99, 9, "intruder")) // must not leak into the store
	es2, _ := s.Entries(1, 6, math.MaxUint64)
	if len(es2) != 5 || es2[2].GetIndex() != 3 || es2[2].GetTerm() != 1 {
		t.Fatalf("store changed by an append to a returned slice: %v", es2)
	}
}

func TestCompactRules(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true})
	mustSave(t, s, nil, ents(1, 10, 1))
	if err := s.Compact(3); !errors.Is(err, ErrCompactBeyondSnapshot) {
		t.Fatalf("Compact without a snapshot: %v, want ErrCompactBeyondSnapshot", err)
	}
	if _, err := s.CreateSnapshot(5, &raftpb.ConfState{Voters: []uint64{1}}, []byte("five")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(5, nil, nil); err != raft.ErrSnapOutOfDate {
		t.Fatalf("CreateSnapshot at the same index: %v, want ErrSnapOutOfDate", err)
	}
	if err := s.Compact(6); !errors.Is(err, ErrCompactBeyondSnapshot) {
		t.Fatalf("Compact(6) past snapshot 5: %v", err)
	}
	if err := s.Compact(5); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(5); err != raft.ErrCompacted {
		t.Fatalf("second Compact(5): %v, want ErrCompacted", err)
	}
	if _, err := s.Entries(5, 7, math.MaxUint64); err != raft.ErrCompacted {
		t.Fatalf("Entries(5,..) after Compact(5): %v, want ErrCompacted", err)
	}
	if tm, err := s.Term(5); tm != 1 || err != nil {
		t.Fatalf("Term(5) after Compact(5) = %d, %v; want 1 (kept for matching)", tm, err)
	}
}

func TestApplySnapshotReplacesLog(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(1, 1, 3), ents(1, 8, 1))
	snap := &raftpb.Snapshot{
		Data: []byte("leader state"),
		Metadata: &raftpb.SnapshotMetadata{
			Index: new(uint64(20)), Term: new(uint64(4)),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}},
		},
	}
	if err := s.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySnapshot(snap); err != raft.ErrSnapOutOfDate {
		t.Fatalf("re-applying: %v, want ErrSnapOutOfDate", err)
	}
	mustSave(t, s, hardState(4, 0, 20), ents(21, 22, 4))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if f, _ := s.FirstIndex(); f != 21 {
		t.Fatalf("FirstIndex = %d, want 21", f)
	}
	if l, _ := s.LastIndex(); l != 22 {
		t.Fatalf("LastIndex = %d, want 22", l)
	}
	if tm, _ := s.Term(20); tm != 4 {
		t.Fatalf("Term(20) = %d, want 4", tm)
	}
	_, cs, _ := s.InitialState()
	if !proto.Equal(cs, raftpb.EnsureConfState(snap.GetMetadata().GetConfState())) {
		t.Fatalf("conf state = %v", cs)
	}
	got, err := s.Snapshot()
	if err != nil || string(got.GetData()) != "leader state" || got.GetMetadata().GetIndex() != 20 {
		t.Fatalf("Snapshot = %v, %v", got, err)
	}
}

// TestSnapshotFilesRetention checks that the newest SnapshotsRetained files
// are kept, and that leftovers of an interrupted install are removed at Open.
func TestSnapshotFilesRetention(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, nil, ents(1, 10, 1))
	for i := uint64(2); i <= 8; i += 2 {
		if _, err := s.CreateSnapshot(i, nil, []byte(fmt.Sprintf("state %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := snapFiles(t, dir); len(got) != 2 {
		t.Fatalf("snapshot files = %v, want the newest 2", got)
	}
	// Leftovers of a crash: a temp file and a file for a snapshot whose
	// record was never committed.
	snapDir := filepath.Join(dir, snapDirName)
	for _, name := range []string{"snap-123.tmp", snapFileName(9, 1, 42)} {
		if err := os.WriteFile(filepath.Join(snapDir, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{NoSync: true, SnapshotsRetained: 1})
	got := snapFiles(t, dir)
	// Open keeps a file newer than the record (it may be evidence of lost
	// writes) but removes temp files and surplus older snapshots.
	if len(got) != 2 || got[0] != s.snap.file || got[1] != snapFileName(9, 1, 42) {
		t.Fatalf("after reopen with SnapshotsRetained=1: files %v, current %s", got, s.snap.file)
	}
	// The next install removes it.
	mustSave(t, s, nil, ents(11, 12, 1))
	if _, err := s.CreateSnapshot(11, nil, []byte("state 11")); err != nil {
		t.Fatal(err)
	}
	if got := snapFiles(t, dir); len(got) != 1 || got[0] != s.snap.file {
		t.Fatalf("after the next snapshot: files %v, current %s", got, s.snap.file)
	}
}

func snapFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, snapDirName))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// TestLargeSnapshotRoundTrip writes a 50 MiB snapshot, reopens the store
// (which verifies the file's checksum by streaming it) and reads it back.
func TestLargeSnapshotRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MiB snapshot")
	}
	const size = 50 << 20
	data := make([]byte, size)
	for i := 0; i < size; i += 4096 { // cheap but position-dependent content
		copy(data[i:], fmt.Sprintf("block %d|", i))
	}
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(1, 1, 3), ents(1, 3, 1))
	sn, err := s.CreateSnapshot(3, &raftpb.ConfState{Voters: []uint64{1}}, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.GetData()) != size {
		t.Fatalf("CreateSnapshot returned %d bytes", len(sn.GetData()))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s = openT(t, dir, Options{})
	got, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Open verifies the file in constant memory; Snapshot holds it once.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size+16<<20 {
		t.Errorf("reopen and Snapshot allocated %d MiB for a %d MiB snapshot", alloc>>20, size>>20)
	} else {
		t.Logf("reopen and Snapshot allocated %d MiB for a %d MiB snapshot", alloc>>20, size>>20)
	}
	if len(got.GetData()) != size || string(got.GetData()[size-4096:size-4080]) != string(data[size-4096:size-4080]) {
		t.Fatalf("snapshot data differs after reopen (%d bytes)", len(got.GetData()))
	}
	for i := 0; i < size; i += 1 << 20 {
		if got.GetData()[i] != data[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
	// The second call is served from memory: the same backing array.
	again, _ := s.Snapshot()
	if &again.GetData()[0] != &got.GetData()[0] {
		t.Fatal("Snapshot re-read the file instead of using its cache")
	}
}

// TestConcurrentReadsDuringWrites runs Raft-like readers against a writer
// that appends, replaces suffixes and compacts; under -race it checks the
// locking, and the readers check they never see a torn log.
func TestConcurrentReadsDuringWrites(t *testing.T) {
	s := openT(t, t.TempDir(), Options{NoSync: true, EntryCacheSize: 4 << 10})
	mustSave(t, s, nil, ents(1, 5, 1))
	done := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				es, err := s.Entries(first, last+1, math.MaxUint64)
				if err == raft.ErrCompacted || errors.Is(err, ErrOutOfRange) {
					continue // the log moved between the calls
				}
				if err != nil {
					errc <- err
					return
				}
				for i := 1; i < len(es); i++ {
					if es[i].GetIndex() != es[i-1].GetIndex()+1 || es[i].GetTerm() < es[i-1].GetTerm() {
						errc <- fmt.Errorf("torn read: %v after %v", es[i], es[i-1])
						return
					}
				}
			}
		}()
	}
	term := uint64(1)
	for i := 0; i < 300; i++ {
		last, _ := s.LastIndex()
		start := last + 1
		if i%7 == 0 && last > 3 {
			start = last - 2 // a new leader overwrites an uncommitted suffix
			term++
		}
		mustSave(t, s, nil, ents(start, start+3, term))
		if i%25 == 0 {
			if _, err := s.CreateSnapshot(start, nil, []byte("s")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(start - 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []Options{
		{CacheSize: -1},
		{MemTableSize: 1000},
		{MaxOpenFiles: 3},
		{SnapshotsRetained: -1},
	}
	for _, o := range bad {
		if err := o.validate(); err == nil {
			t.Errorf("validate(%+v) accepted a bad value", o)
		}
	}
	var o Options
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil || o.CacheSize != DefaultCacheSize || o.MemTableSize != DefaultMemTableSize ||
		o.EntryCacheSize != DefaultEntryCacheSize || o.SnapshotsRetained != DefaultSnapshotsRetained {
		t.Fatalf("defaults not filled: %+v", o)
	}
	o = Options{EntryCacheSize: -1}
	_ = o.validate()
	if o.EntryCacheSize != 0 {
		t.Fatalf("negative EntryCacheSize should disable the cache, got %d", o.EntryCacheSize)
	}
}

// TestCrashAfterSaveKeepsData kills (SIGKILL) a child process that saves
// entries in a loop and reports each one after Save returns, then checks that
// every reported entry is in the store. This is the durability promise of
// Save against a process crash.
func TestCrashAfterSaveKeepsData(t *testing.T) {
	if dir := os.Getenv("RAFTSTORE_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashAfterSaveKeepsData$")
	cmd.Env = append(os.Environ(), "RAFTSTORE_CRASH_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reported uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "saved ") {
			continue
		}
		if reported, err = strconv.ParseUint(strings.TrimPrefix(line, "saved "), 10, 64); err != nil {
			t.Fatal(err)
		}
		if reported >= 200 {
			break
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = io.Copy(io.Discard, out)
	_ = cmd.Wait()
	if reported < 200 {
		t.Fatalf("child reported only %d saves", reported)
	}

	s := openT(t, dir, Options{})
	last, _ := s.LastIndex()
	if last < reported {
		t.Fatalf("after the crash the log ends at %d, but Save had returned for %d", last, reported)
	}
	hs, _, _ := s.InitialState()
	if hs.GetCommit() < reported-1 {
		t.Fatalf("hard state commit %d, want >= %d", hs.GetCommit(), reported-1)
	}
	es, err := s.Entries(1, last+1, math.MaxUint64)
	if err != nil || uint64(len(es)) != last {
		t.Fatalf("Entries after crash: %d, %v", len(es), err)
	}
}

// crashChild saves one entry per Ready-like step and reports it, until the
// parent kills it (or stops listening: then a write to stdout fails).
func crashChild(dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := uint64(1); i < 100000; i++ {
		if err := s.Save(hardState(1, 1, i-1), []*raftpb.Entry{ent(i, 1, "crash test payload")}); err != nil {
			fmt.Println("save:", err)
			os.Exit(1)
		}
		if _, err := fmt.Printf("saved %d\n", i); err != nil {
			os.Exit(1)
		}
	}
	os.Exit(1)
}

// rawDB opens the Pebble database of a closed store directly, to damage it.
func rawDB(t *testing.T, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dir, pebbleDirName), &pebble.Options{FS: noSyncFS{vfs.Default}, Logger: pebbleLogger{nopLogger()}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestMetricsRegisterAndReopen(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, nil, ents(1, 4, 1))
	if _, err := s.Entries(1, 5, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, s.metrics.savedEntries); got != 4 {
		t.Fatalf("saved_entries_total = %v, want 4", got)
	}
	if got := counterValue(t, s.metrics.cacheHits); got != 1 {
		t.Fatalf("entry_cache_hits_total = %v, want 1", got)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 9 {
		t.Fatalf("gathered %d metric families, %v; want 9 (with the WAL metrics)", len(mfs), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close unregistered the collectors, so the same registry can be reused.
	openT(t, dir, Options{NoSync: true, Registerer: reg})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
