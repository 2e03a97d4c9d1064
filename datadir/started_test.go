package datadir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartedRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	id, err := Create(dir, Identity{ClusterID: clusterA, RaftID: 2, Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStarted(dir); !errors.Is(err, ErrNotStarted) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadStarted of a new directory: %v, want ErrNotStarted", err)
	}
	if err := MarkStarted(dir, id); err != nil {
		t.Fatal(err)
	}
	rec, err := LoadStarted(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RaftID != 2 || rec.Incarnation != id.Incarnation || rec.At.IsZero() {
		t.Fatalf("record %+v, want raft ID 2 and incarnation %s", rec, id.Incarnation)
	}
	// Idempotent: the first time is kept.
	if err := MarkStarted(dir, id); err != nil {
		t.Fatal(err)
	}
	again, _ := LoadStarted(dir)
	if !again.At.Equal(rec.At) {
		t.Fatalf("MarkStarted rewrote the record: %v, then %v", rec.At, again.At)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			t.Fatalf("left %s behind", e.Name())
		}
	}
	// A record of another incarnation (copied from elsewhere) is refused.
	other, err := Create(filepath.Join(t.TempDir(), "other"), Identity{ClusterID: clusterA, RaftID: 2, Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkStarted(dir, other); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("MarkStarted with another incarnation: %v, want ErrBadFormat", err)
	}
	// A corrupt record is reported, never taken as "not started".
	if err := os.WriteFile(filepath.Join(dir, StartedFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStarted(dir); !errors.Is(err, ErrBadFormat) || errors.Is(err, ErrNotStarted) {
		t.Fatalf("LoadStarted of a corrupt record: %v, want ErrBadFormat", err)
	}
}

func TestFirstStartRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	id, err := Create(dir, Identity{ClusterID: clusterA, RaftID: 1, Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFirstStart(dir); !errors.Is(err, ErrNoFirstStart) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadFirstStart of a new directory: %v, want ErrNoFirstStart", err)
	}
	if err := RecordFirstStart(dir, id, FirstStartBootstrap); err != nil {
		t.Fatal(err)
	}
	if err := RecordFirstStart(dir, id, FirstStartBootstrap); err != nil {
		t.Fatalf("recording the same way again: %v", err)
	}
	if err := RecordFirstStart(dir, id, FirstStartJoin); err == nil || !strings.Contains(err.Error(), "created to bootstrap, not to join") {
		t.Fatalf("recording another way: %v", err)
	}
	rec, err := LoadFirstStart(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rec.How != FirstStartBootstrap || rec.RaftID != 1 || rec.Incarnation != id.Incarnation {
		t.Fatalf("record %+v", rec)
	}
	if err := RecordFirstStart(dir, id, "guess"); err == nil {
		t.Fatal("an unknown way was recorded")
	}
	// The records do not stop the identity from loading.
	if _, err := Load(dir); err != nil {
		t.Fatal(err)
	}
}
