package datadir

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

var (
	clusterA = uuid.MustParse("0193f3c4-7a51-7c2e-9a1d-2f6c1e0b9d42")
	clusterB = uuid.MustParse("0193f3c4-aaaa-7bbb-8ccc-dddddddddddd")
)

func TestCreateLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	id, err := Create(dir, Identity{ClusterID: clusterA, RaftID: 0xabcdef0123, Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Incarnation.Version() != 7 || id.FormatVersion != FormatVersion || id.CreatedAt.IsZero() {
		t.Fatalf("Create filled in %+v", id)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ClusterID != clusterA || got.RaftID != 0xabcdef0123 || got.Name != "n1" ||
		got.Incarnation != id.Incarnation || !got.CreatedAt.Equal(id.CreatedAt) {
		t.Fatalf("Load = %+v, want %+v", got, id)
	}
	// Human-readable, with the Raft ID as a hex string.
	raw, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m["raft_id"] != "000000abcdef0123" || m["incarnation"] != id.Incarnation.String() {
		t.Fatalf("identity file:\n%s", raw)
	}
}

func TestCreateRefusesExistingOrForeignData(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir, Identity{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, Identity{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}

	foreign := t.TempDir()
	if err := os.Mkdir(RaftDir(foreign), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(foreign, Identity{}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Create over data without identity: %v, want ErrNotEmpty", err)
	}
	if _, err := Create(t.TempDir(), Identity{Incarnation: uuid.Must(uuid.NewV7())}); err == nil {
		t.Fatal("Create accepted a caller-chosen incarnation")
	}
}

func TestLoadMissingIdentity(t *testing.T) {
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNoIdentity) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of an empty directory: %v, want ErrNoIdentity and fs.ErrNotExist", err)
	}
}

func TestMismatchNamesBothSides(t *testing.T) {
	dir := t.TempDir()
	id, err := Create(dir, Identity{ClusterID: clusterA, RaftID: 2, Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	other := uuid.Must(uuid.NewV7())
	cases := []struct {
		want      Expect
		mentions  []string
		wantField string
	}{
		{Expect{ClusterID: clusterB, Source: "--cluster"},
			[]string{dir, clusterA.String(), "raft ID 0000000000000002", id.Incarnation.String(), "--cluster says cluster " + clusterB.String()}, "cluster"},
		{Expect{RaftID: 3},
			[]string{dir, clusterA.String(), "raft ID 0000000000000002", "the caller says raft ID 0000000000000003"}, "raft ID"},
		{Expect{Incarnation: other, Source: "the membership directory"},
			[]string{id.Incarnation.String(), "the membership directory says incarnation " + other.String()}, "incarnation"},
		{Expect{Name: "n9"}, []string{`name "n2"`, `says name "n9"`}, "name"},
	}
	for _, c := range cases {
		err := id.Check(c.want)
		var me *MismatchError
		if !errors.Is(err, ErrMismatch) || !errors.As(err, &me) || me.Field != c.wantField {
			t.Fatalf("Check(%+v) = %v, want a %s mismatch", c.want, err, c.wantField)
		}
		for _, s := range c.mentions {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("message %q does not mention %q", err, s)
			}
		}
	}
	if err := id.Check(Expect{ClusterID: clusterA, RaftID: 2, Incarnation: id.Incarnation, Name: "n2"}); err != nil {
		t.Fatalf("Check of matching expectations: %v", err)
	}
	if err := id.Check(Expect{}); err != nil {
		t.Fatalf("Check of no expectations: %v", err)
	}
}

func TestWipedDirectoryGetsNewIncarnation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	first, created, err := openOrCreate(dir, Expect{ClusterID: clusterA, RaftID: 2})
	if err != nil || !created {
		t.Fatalf("OpenOrCreate: %v, created=%v", err, created)
	}
	again, created, err := openOrCreate(dir, Expect{ClusterID: clusterA, RaftID: 2, Incarnation: first.Incarnation})
	if err != nil || created || again.Incarnation != first.Incarnation {
		t.Fatalf("reopen: %v, created=%v, incarnation %s", err, created, again.Incarnation)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// Whoever remembers the old incarnation is told the directory was wiped.
	if _, _, err := openOrCreate(dir, Expect{Incarnation: first.Incarnation}); !errors.Is(err, ErrMismatch) ||
		!strings.Contains(err.Error(), "has no identity") {
		t.Fatalf("OpenOrCreate of a wiped dir expecting the old incarnation: %v", err)
	}
	fresh, created, err := openOrCreate(dir, Expect{ClusterID: clusterA})
	if err != nil || !created {
		t.Fatalf("OpenOrCreate after wipe: %v, created=%v", err, created)
	}
	if fresh.Incarnation == first.Incarnation {
		t.Fatal("a wiped directory got its old incarnation back")
	}
	if fresh.Incarnation.Version() != 7 {
		t.Fatalf("incarnation %s is not v7", fresh.Incarnation)
	}
}

func TestOpenOrCreateAdoptsUnsetFields(t *testing.T) {
	dir := t.TempDir()
	id, _, err := openOrCreate(dir, Expect{Name: "n4"})
	if err != nil {
		t.Fatal(err)
	}
	got, created, err := openOrCreate(dir, Expect{ClusterID: clusterA, RaftID: 4})
	if err != nil || created || got.ClusterID != clusterA || got.RaftID != 4 || got.Incarnation != id.Incarnation {
		t.Fatalf("adopting: %+v, created=%v, %v", got, created, err)
	}
	loaded, err := Load(dir)
	if err != nil || loaded.ClusterID != clusterA || loaded.RaftID != 4 {
		t.Fatalf("adopted fields not durable: %+v, %v", loaded, err)
	}
	// A real conflict adopts nothing.
	if _, _, err := openOrCreate(dir, Expect{ClusterID: clusterB, RaftID: 4}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("conflicting cluster: %v", err)
	}
}

func TestSetRaftIDAndCluster(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir, Identity{Name: "joiner"}); err != nil {
		t.Fatal(err)
	}
	if _, err := SetCluster(dir, clusterA); err != nil {
		t.Fatal(err)
	}
	if _, err := SetRaftID(dir, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := SetRaftID(dir, 7); err != nil {
		t.Fatalf("setting the same raft ID again: %v", err)
	}
	if _, err := SetRaftID(dir, 8); !errors.Is(err, ErrMismatch) {
		t.Fatalf("changing the raft ID: %v, want ErrMismatch", err)
	}
	if _, err := SetCluster(dir, clusterB); !errors.Is(err, ErrMismatch) {
		t.Fatalf("changing the cluster: %v, want ErrMismatch", err)
	}
	if _, err := SetRaftID(dir, 0); err == nil {
		t.Fatal("SetRaftID(0) accepted")
	}
	id, err := Load(dir)
	if err != nil || id.RaftID != 7 || id.ClusterID != clusterA || id.Name != "joiner" {
		t.Fatalf("after updates: %+v, %v", id, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix)); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func TestCorruptIdentityFile(t *testing.T) {
	valid := func() map[string]any {
		return map[string]any{
			"format_version": 1, "cluster_id": clusterA.String(), "raft_id": "0000000000000002",
			"incarnation": uuid.Must(uuid.NewV7()).String(), "name": "n", "created_at": "2026-01-02T03:04:05Z",
		}
	}
	with := func(k string, v any) []byte {
		m := valid()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	cases := map[string][]byte{
		"empty":                 {},
		"not json":              []byte("raft_id=2\n"),
		"truncated":             with("name", "n")[:40],
		"future format":         with("format_version", 2),
		"no format":             with("format_version", nil),
		"random incarnation v4": with("incarnation", uuid.New().String()),
		"bad incarnation":       with("incarnation", "nope"),
		"decimal raft id":       with("raft_id", 2),
		"short raft id":         with("raft_id", "2"),
		"non-hex raft id":       with("raft_id", "000000000000000g"),
		"bad cluster":           with("cluster_id", "cluster-a"),
		"unknown field":         with("extra", true),
		"no created_at":         with("created_at", nil),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, IdentityFile), content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if !errors.Is(err, ErrBadFormat) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("Load: %v, want ErrBadFormat naming the file", err)
			}
			if _, _, err := openOrCreate(dir, Expect{}); !errors.Is(err, ErrBadFormat) {
				t.Fatalf("OpenOrCreate must not replace a corrupt identity: %v", err)
			}
		})
	}
	// The valid variant loads, so the cases above fail for their own reason.
	dir := t.TempDir()
	b, _ := json.Marshal(valid())
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err != nil {
		t.Fatalf("valid identity: %v", err)
	}
}

func TestLockExcludesSecondOpener(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second Lock: %v, want ErrLocked naming %s and our pid", err, dir)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
	unlock2, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	_ = unlock2()
}

// TestLockAcrossProcesses holds the lock in a child process and checks that
// this one is refused until the child exits.
func TestLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("DATADIR_LOCK_CHILD"); dir != "" {
		if _, err := Lock(dir); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold until the parent closes stdin
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$")
	cmd.Env = append(os.Environ(), "DATADIR_LOCK_CHILD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = Lock(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		t.Fatalf("Lock held by child %d: %v", cmd.Process.Pid, err)
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after the holder exited: %v", err)
	}
	_ = unlock()
}
