package datadir

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestCreateGeneratesPrivateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	id, err := Create(dir, Identity{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(id.PublicKey) {
		t.Fatalf("public key %q is not a user key", id.PublicKey)
	}
	fi, err := os.Stat(SeedPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed mode %04o, want 0600", fi.Mode().Perm())
	}
	// The public key is in IDENTITY; the seed is not.
	raw, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	seed, _ := os.ReadFile(SeedPath(dir))
	if m["public_key"] != id.PublicKey || !strings.HasPrefix(string(seed), "SU") ||
		strings.Contains(string(raw), strings.TrimSpace(string(seed))) {
		t.Fatalf("identity file:\n%s", raw)
	}
	kp, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != id.PublicKey {
		t.Fatalf("LoadKey gave %s, identity names %s", pub, id.PublicKey)
	}
	// The key signs, and the public key alone verifies.
	sig, err := kp.Sign([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := nkeys.FromPublicKey(id.PublicKey)
	if pk.Verify([]byte("x"), sig) != nil {
		t.Fatal("signature does not verify with the identity's public key")
	}
	got, err := Load(dir)
	if err != nil || got.PublicKey != id.PublicKey {
		t.Fatalf("Load: %v %v", got, err)
	}
	other, err := Create(filepath.Join(t.TempDir(), "other"), Identity{})
	if err != nil {
		t.Fatal(err)
	}
	if other.PublicKey == id.PublicKey {
		t.Fatal("two incarnations got the same key")
	}
}

func TestLoadKeyRefusesBadSeeds(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir, Identity{}); err != nil {
		t.Fatal(err)
	}
	seed, err := os.ReadFile(SeedPath(dir))
	if err != nil {
		t.Fatal(err)
	}

	// Readable by others.
	if err := os.Chmod(SeedPath(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("world-readable seed: %v, want ErrBadKey naming the mode", err)
	}
	_ = os.Chmod(SeedPath(dir), 0o600)

	// Another incarnation's seed: a mismatch, and the error shows no seed.
	otherDir := t.TempDir()
	if _, err := Create(otherDir, Identity{}); err != nil {
		t.Fatal(err)
	}
	otherSeed, _ := os.ReadFile(SeedPath(otherDir))
	if err := os.WriteFile(SeedPath(dir), otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadKey(dir)
	if !errors.Is(err, ErrBadKey) {
		t.Fatalf("foreign seed: %v, want ErrBadKey", err)
	}
	if strings.Contains(err.Error(), strings.TrimSpace(string(otherSeed))) || strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
		t.Fatalf("error leaks the seed: %v", err)
	}

	// Garbage.
	if err := os.WriteFile(SeedPath(dir), []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); !errors.Is(err, ErrBadKey) {
		t.Fatalf("garbage seed: %v, want ErrBadKey", err)
	}

	// Missing.
	if err := os.Remove(SeedPath(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); !errors.Is(err, ErrNoKey) {
		t.Fatalf("missing seed: %v, want ErrNoKey", err)
	}

	// The original seed loads again.
	if err := os.WriteFile(SeedPath(dir), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); err != nil {
		t.Fatal(err)
	}
}

// A directory made before keys existed still loads; EnsureKey adds a key
// once and then keeps it.
func TestEnsureKeyUpgradesOldDirectory(t *testing.T) {
	dir := t.TempDir()
	old := `{
  "format_version": 1,
  "cluster_id": "0193f3c4-7a51-7c2e-9a1d-2f6c1e0b9d42",
  "raft_id": "0000000000000002",
  "incarnation": "0193f3c4-8b02-7d11-8e5f-51a0c3e7b6a9",
  "name": "n2",
  "created_at": "2026-11-25T20:00:00.123Z"
}
`
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := Load(dir)
	if err != nil || id.PublicKey != "" {
		t.Fatalf("old identity: %+v %v", id, err)
	}
	if _, err := LoadKey(dir); !errors.Is(err, ErrNoKey) {
		t.Fatalf("LoadKey of an old directory: %v, want ErrNoKey", err)
	}
	id, err = EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(id.PublicKey) || id.RaftID != 2 || id.Name != "n2" || id.ClusterID != clusterA {
		t.Fatalf("EnsureKey: %+v", id)
	}
	again, err := EnsureKey(dir)
	if err != nil || again.PublicKey != id.PublicKey {
		t.Fatalf("second EnsureKey changed the key: %v %v", again, err)
	}
	kp, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != id.PublicKey {
		t.Fatal("LoadKey after EnsureKey gives another key")
	}
}

func TestBadPublicKeyInIdentity(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir, Identity{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, IdentityFile)
	raw, _ := os.ReadFile(path)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	m["public_key"] = "Ubogus"
	raw, _ = json.Marshal(m)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("bogus public key: %v, want ErrBadFormat", err)
	}
}
