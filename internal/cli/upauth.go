package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/datadir"
)

// upAdminKeyFile is where 'raftbus up' keeps the admin's nkey seed.
const upAdminKeyFile = "admin.nk"

// upAuth is the embedded server's authorization for 'raftbus up': the
// generated node users and an admin nkey whose seed lives in the cluster
// directory.
type upAuth struct {
	config    authConfig
	adminSeed string
}

// newUpAuth derives the users of the local cluster. fresh says the nodes
// bootstrap now, so each may create the membership stream.
func newUpAuth(dir string, idents []*datadir.Identity, fresh bool) (*upAuth, error) {
	nodes := make([]authNode, len(idents))
	for i, id := range idents {
		withKey, err := datadir.EnsureKey(filepath.Join(dir, id.Name))
		if err != nil {
			return nil, err
		}
		idents[i] = withKey
		nodes[i] = authNode{Name: id.Name, Incarnation: id.Incarnation, PublicKey: withKey.PublicKey, Bootstrap: fresh}
	}
	seed := filepath.Join(dir, upAdminKeyFile)
	pub, err := loadOrCreateAdminKey(seed)
	if err != nil {
		return nil, err
	}
	c := buildAuthConfig("", idents[0].ClusterID, nodes, authUser{Nkey: pub})
	return &upAuth{config: c, adminSeed: seed}, nil
}

// loadOrCreateAdminKey returns the public key of the admin seed at path,
// generating the seed the first time.
func loadOrCreateAdminKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writeAdminKey(path)
	}
	if err != nil {
		return "", fmt.Errorf("admin key: %w", err)
	}
	return publicKeyOfSeed(path, b)
}

// readAdminKey returns the public key of the seed at path.
func readAdminKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return publicKeyOfSeed(path, b)
}

func publicKeyOfSeed(path string, b []byte) (string, error) {
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("admin key %s: %w", path, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}
