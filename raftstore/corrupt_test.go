package raftstore

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	raftpb "go.etcd.io/raft/v3/raftpb"
)

// populated returns the directory of a closed store with a log, a hard state
// and a snapshot.
func populated(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, hardState(1, 1, 8), ents(1, 10, 1))
	if _, err := s.CreateSnapshot(5, &raftpb.ConfState{Voters: []uint64{1}}, []byte("snapshot data")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// expectOpenError opens dir and requires an error matching want.
func expectOpenError(t *testing.T, dir string, want error) {
	t.Helper()
	s, err := Open(dir, Options{NoSync: true})
	if err == nil {
		_ = s.Close()
		t.Fatalf("Open succeeded on a damaged store, want %v", want)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("Open: %v, want %v", err, want)
	}
	t.Logf("Open: %v", err)
}

func TestOpenRejectsDamagedRecords(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
	}{
		{"unknown format version", setKey(keyVersion, encodeVersion(99)), ErrUnsupportedFormat},
		{"malformed format version", setKey(keyVersion, []byte{1}), ErrCorrupt},
		{"version missing but data present", deleteKey(keyVersion), ErrCorrupt},
		{"garbage hard state", setKey(keyHardState, []byte{0xff, 0xff, 0xff}), ErrCorrupt},
		{"truncated state missing", deleteKey(keyTruncated), ErrCorrupt},
		{"garbage truncated state", setKey(keyTruncated, []byte("short")), ErrCorrupt},
		{"snapshot record bit flip", func(t *testing.T, dir string) {
			db := rawDB(t, dir)
			v, closer, err := db.Get(keySnapshot)
			if err != nil {
				t.Fatal(err)
			}
			b := append([]byte{}, v...)
			_ = closer.Close()
			b[3] ^= 0x10
			if err := db.Set(keySnapshot, b, nil); err != nil {
				t.Fatal(err)
			}
			_ = db.Close()
		}, ErrCorrupt},
		{"hole at the start of the log", deleteKey(logKey(4)), ErrCorrupt},
		{"snapshot file missing", func(t *testing.T, dir string) {
			for _, n := range snapFiles(t, dir) {
				_ = os.Remove(filepath.Join(dir, snapDirName, n))
			}
		}, ErrCorrupt},
		{"snapshot file bit flip", flipSnapByte(snapHeaderLen + 3), ErrCorrupt},
		{"snapshot header bit flip", flipSnapByte(20), ErrCorrupt},
		{"snapshot file truncated", func(t *testing.T, dir string) {
			for _, n := range snapFiles(t, dir) {
				if err := os.Truncate(filepath.Join(dir, snapDirName, n), snapHeaderLen+2); err != nil {
					t.Fatal(err)
				}
			}
		}, ErrCorrupt},
		{"pebble sstable garbage", garbleFiles(".sst"), nil},
		{"pebble MANIFEST garbage", garbleFiles("MANIFEST"), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := populated(t)
			c.damage(t, dir)
			expectOpenError(t, dir, c.want)
		})
	}
}

func TestHoleInsideTheLogIsReported(t *testing.T) {
	dir := populated(t)
	deleteKey(logKey(7))(t, dir)
	s := openT(t, dir, Options{NoSync: true})
	if _, err := s.Entries(4, 11, math.MaxUint64); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Entries over a hole: %v, want ErrCorrupt", err)
	}
	if _, err := s.Term(7); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Term of a missing entry: %v, want ErrCorrupt", err)
	}
}

// TestSnapshotCorruptedAfterOpen damages the file after Open verified it;
// Snapshot verifies again when it loads the data.
func TestSnapshotCorruptedAfterOpen(t *testing.T) {
	dir := populated(t)
	s := openT(t, dir, Options{NoSync: true})
	flipSnapByte(snapHeaderLen)(t, dir)
	if _, err := s.Snapshot(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Snapshot of a damaged file: %v, want ErrCorrupt", err)
	}
}

func setKey(key, value []byte) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		db := rawDB(t, dir)
		if err := db.Set(key, value, nil); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
	}
}

func deleteKey(key []byte) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		db := rawDB(t, dir)
		if err := db.Delete(key, nil); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
	}
}

func flipSnapByte(off int64) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		for _, n := range snapFiles(t, dir) {
			path := filepath.Join(dir, snapDirName, n)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[off] ^= 0x01
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// garbleFiles overwrites every Pebble file whose name contains pattern.
func garbleFiles(pattern string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		db := filepath.Join(dir, pebbleDirName)
		des, err := os.ReadDir(db)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, d := range des {
			if strings.Contains(d.Name(), pattern) {
				if err := os.WriteFile(filepath.Join(db, d.Name()), []byte("\x00garbage\xff not pebble"), 0o600); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		if n == 0 {
			t.Fatalf("no pebble file matched %q", pattern)
		}
	}
}
