package raftstore

import (
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// faultFS injects err into the operations that match, while on.
type faultFS struct {
	mem *vfs.MemFS
	fs  vfs.FS
	on  atomic.Bool
}

func newFaultFS(err error, match func(errorfs.Op) bool) *faultFS {
	f := &faultFS{mem: vfs.NewCrashableMem()}
	f.fs = errorfs.Wrap(f.mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if f.on.Load() && match(op) {
			return err
		}
		return nil
	}))
	return f
}

func isSync(op errorfs.Op) bool {
	return op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo
}

func isWrite(op errorfs.Op) bool {
	return op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt
}

func inSnapDir(op errorfs.Op) bool { return strings.Contains(op.Path, "/"+snapDirName+"/") }

// TestStorageFailureStopsTheStore makes fsync or a write fail (a failed
// fsync, a full disk) during each kind of write. The call must return an
// error wrapping both ErrFailed and the cause, never panic (Pebble treats
// a failed WAL write or sync as fatal and calls Fatalf), never report
// success; every later call must fail too, even once the disk works again;
// and what was acknowledged before must survive a power loss right after.
func TestStorageFailureStopsTheStore(t *testing.T) {
	enospc := syscall.ENOSPC
	cases := []struct {
		name  string
		cause error
		match func(errorfs.Op) bool
		op    func(s *Store) error
	}{
		{"Save, fsync fails", errorfs.ErrInjected, isSync, func(s *Store) error {
			return s.Save(hardState(1, 1, 10), ents(11, 12, 1))
		}},
		{"Save, disk full", enospc, isWrite, func(s *Store) error {
			return s.Save(hardState(1, 1, 10), ents(11, 12, 1))
		}},
		{"ApplySnapshot, data file fsync fails", errorfs.ErrInjected, func(op errorfs.Op) bool { return isSync(op) && inSnapDir(op) }, func(s *Store) error {
			return s.ApplySnapshot(snapOf(20, 2, []byte("leader state"), 1, 2, 3))
		}},
		{"ApplySnapshot, WAL fsync fails", errorfs.ErrInjected, func(op errorfs.Op) bool {
			return isSync(op) && !inSnapDir(op) && !strings.HasSuffix(op.Path, snapDirName)
		}, func(s *Store) error {
			return s.ApplySnapshot(snapOf(20, 2, []byte("leader state"), 1, 2, 3))
		}},
		{"CreateSnapshot, disk full", enospc, func(op errorfs.Op) bool { return isWrite(op) && inSnapDir(op) }, func(s *Store) error {
			_, err := s.CreateSnapshot(8, nil, []byte("local state"))
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultFS(tc.cause, tc.match)
			s, err := Open(crashDir, Options{fs: f.fs, Logger: nopLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			mustSave(t, s, hardState(1, 1, 9), ents(1, 10, 1))

			f.on.Store(true)
			err = tc.op(s)
			if !errors.Is(err, ErrFailed) || !errors.Is(err, tc.cause) {
				t.Fatalf("got %v, want an error wrapping ErrFailed and %v", err, tc.cause)
			}
			if !strings.Contains(err.Error(), "storage failed, the node must stop") {
				t.Fatalf("error %q does not say that the node must stop", err)
			}
			t.Logf("error: %v", err)

			f.on.Store(false)
			if err := s.Save(hardState(1, 1, 10), ents(11, 11, 1)); !errors.Is(err, ErrFailed) {
				t.Fatalf("Save after the failure: %v, want ErrFailed", err)
			}
			if _, err := s.Entries(1, 2, math.MaxUint64); !errors.Is(err, ErrFailed) {
				t.Fatalf("Entries after the failure: %v, want ErrFailed", err)
			}
			// A power loss now keeps everything acknowledged.
			image := f.mem.CrashClone(vfs.CrashCloneCfg{})
			_ = s.Close()
			s = openT(t, crashDir, Options{fs: image, Logger: nopLogger()})
			if err := checkRaftRestarts(s); err != nil {
				t.Fatal(err)
			}
			hs, _, _ := s.InitialState()
			last, _ := s.LastIndex()
			if hs.GetTerm() != 1 || hs.GetVote() != 1 || hs.GetCommit() < 9 || last < 10 {
				t.Fatalf("after the power loss: hard state %v, last index %d; want term 1, vote 1, commit >= 9, last >= 10", hs, last)
			}
			if last == 10 {
				es, err := s.Entries(1, 11, math.MaxUint64)
				if err != nil || len(es) != 10 {
					t.Fatalf("Entries(1, 11) = %d entries, %v", len(es), err)
				}
			}
		})
	}
}
