package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// SeedPath returns where dir keeps its incarnation's nkey seed.
func SeedPath(dir string) string { return filepath.Join(dir, SeedFile) }

// writeNewKey creates a user key pair and stores its seed in dir/SeedFile,
// atomically and durably, replacing any seed left by an interrupted Create
// or EnsureKey (no identity names such a seed). It returns the public key.
// The temporary file is created with mode 0600 and renamed into place, so
// the seed is never readable by anyone else, not even briefly.
func writeNewKey(dir string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("datadir: generate nkey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("datadir: nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("datadir: nkey public key: %w", err)
	}
	data := append(seed, '\n')
	err = writeFile(dir, SeedFile, data, true)
	wipe(data)
	if err != nil {
		return "", err
	}
	return pub, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// LoadKey loads the key pair of dir's incarnation and checks it against the
// public key in its identity. It fails with ErrNoKey when the identity has
// no key (a directory from before keys: see EnsureKey) or the seed file is
// missing, and with ErrBadKey when the seed is unreadable, readable by
// group or others, or belongs to another public key. The seed is never
// included in an error.
func LoadKey(dir string) (nkeys.KeyPair, error) {
	id, err := Load(dir)
	if err != nil {
		return nil, err
	}
	return loadKey(dir, id)
}

func loadKey(dir string, id *Identity) (nkeys.KeyPair, error) {
	path := SeedPath(dir)
	if id.PublicKey == "" {
		return nil, fmt.Errorf("%w: identity %s has no public key (run the node once, or use EnsureKey, to add one)", ErrNoKey, filepath.Join(dir, IdentityFile))
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing but the identity names public key %s", ErrNoKey, path, id.PublicKey)
	}
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o: the seed must be readable by its owner only (chmod 600)", ErrBadKey, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	defer wipe(b)
	kp, err := nkeys.FromSeed(trimSpace(b))
	if err != nil {
		// Not %v of err: never risk echoing seed material.
		return nil, fmt.Errorf("%w: %s does not hold a valid nkey seed", ErrBadKey, path)
	}
	pub, err := kp.PublicKey()
	if err != nil || pub != id.PublicKey {
		kp.Wipe()
		return nil, fmt.Errorf("%w: %s holds the seed of %s but the identity names %s", ErrBadKey, path, pub, id.PublicKey)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		kp.Wipe()
		return nil, fmt.Errorf("%w: %s is not a user key", ErrBadKey, path)
	}
	return kp, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// EnsureKey gives an identity created before keys existed a key pair:
// it writes a new seed and records its public key in the identity, both
// durably. An identity that has a key is returned as it is once LoadKey
// accepts its seed. Callers hold Lock.
func EnsureKey(dir string) (*Identity, error) {
	id, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if id.PublicKey != "" {
		kp, err := loadKey(dir, id)
		if err != nil {
			return nil, err
		}
		kp.Wipe()
		return id, nil
	}
	pub, err := writeNewKey(dir)
	if err != nil {
		return nil, err
	}
	return update(dir, func(cur *Identity) error {
		if cur.PublicKey != "" && cur.PublicKey != pub {
			return fmt.Errorf("%w: identity gained public key %s meanwhile (is the directory locked?)", ErrBadKey, cur.PublicKey)
		}
		cur.PublicKey = pub
		return nil
	})
}
