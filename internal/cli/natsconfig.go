package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/raftbridge"
)

func init() { commands = append(commands, newNATSConfigCmd) }

type natsConfigFlags struct {
	nats        natsFlags
	data        []string
	cluster     string
	prefix      string
	adminKeyOut string
	adminNkey   string
	adminUser   string
	adminPass   string
	account     string
	writeOut    string
}

func newNATSConfigCmd(g *globals) *cobra.Command {
	f := &natsConfigFlags{}
	cmd := &cobra.Command{
		Use:   "nats-config [--data DIR ...] [--cluster ID -s NATS_URL] (--admin-key-out FILE | --admin-nkey KEY | --admin-user U --admin-password P)",
		Short: "Print the NATS users and permissions of a cluster's nodes",
		Long: `Print the nats-server authorization block for a raftbus cluster: one nkey
user per node incarnation with the tightest permissions that work, plus an
admin user for 'raftbus member'. Paste it into the server's configuration.

The nodes come from their data directories (--data, repeatable; create them
first with 'raftbus node init'), or with --cluster from the verified
announcements on the cluster's membership stream (connecting as the admin),
or both: the stream's members plus new directories.

The admin user is an nkey: --admin-key-out FILE generates one and writes its
seed to FILE (mode 0600; the CLI then uses --nkey FILE), --admin-nkey KEY|FILE uses
an existing key (its public key, or the seed file); or a password user (--admin-user, --admin-password).

-w conf (default) prints the block, -w json the same as JSON with the reason
for every permission, -w nsc the equivalent nsc commands for operator (JWT)
mode. SECURITY.md explains each permission.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runNATSConfig(cmd.Context(), g, f) },
	}
	fs := cmd.Flags()
	f.nats.register(fs)
	fs.StringArrayVar(&f.data, "data", nil, "a node's data directory (repeat for every node)")
	fs.StringVar(&f.cluster, "cluster", envOr("RAFTBUS_CLUSTER", ""), "read the nodes from this cluster's membership stream instead ($RAFTBUS_CLUSTER)")
	fs.StringVar(&f.prefix, "prefix", envOr("RAFTBUS_PREFIX", "raftbus"), "NATS subject prefix ($RAFTBUS_PREFIX)")
	fs.StringVar(&f.adminKeyOut, "admin-key-out", "", "generate the admin's nkey and write its seed to this file (mode 0600)")
	fs.StringVar(&f.adminNkey, "admin-nkey", "", "the admin's existing nkey: its public key (U...) or its seed file")
	fs.StringVar(&f.adminUser, "admin-user", "", "the admin as a password user: its name")
	fs.StringVar(&f.adminPass, "admin-password", envOr("RAFTBUS_ADMIN_PASSWORD", ""), "the admin user's password ($RAFTBUS_ADMIN_PASSWORD)")
	fs.StringVar(&f.account, "account", "RAFTBUS", "account of the users in -w nsc output")
	fs.StringVarP(&f.writeOut, "write-out", "w", "conf", "output: conf, json or nsc")
	return cmd
}

func (f *natsConfigFlags) validate() error {
	if len(f.data) == 0 && f.cluster == "" {
		return errors.New("give the nodes' data directories (--data DIR, repeated), --cluster ID, or both (the stream's members plus new directories)")
	}
	admins := 0
	for _, set := range []bool{f.adminKeyOut != "", f.adminNkey != "", f.adminUser != ""} {
		if set {
			admins++
		}
	}
	if admins != 1 {
		return errors.New("name the admin user once: --admin-key-out FILE (a new nkey), --admin-nkey KEY, or --admin-user NAME with --admin-password")
	}
	if f.adminUser != "" && f.adminPass == "" {
		return errors.New("--admin-user needs --admin-password")
	}
	switch f.writeOut {
	case "conf", "json", "nsc":
		return nil
	}
	return fmt.Errorf("--write-out %q: use conf, json or nsc", f.writeOut)
}

func runNATSConfig(ctx context.Context, g *globals, f *natsConfigFlags) error {
	if err := f.validate(); err != nil {
		return usageErr(err)
	}
	var cluster uuid.UUID
	var nodes []authNode
	var err error
	if f.cluster != "" {
		if cluster, nodes, err = f.nodesFromStream(ctx); err != nil {
			return err
		}
	}
	if len(f.data) > 0 {
		dirCluster, dirNodes, err := nodesFromDirs(f.data)
		if err != nil {
			return err
		}
		if cluster != uuid.Nil && dirCluster != cluster {
			return withCode(ExitPrecondition, fmt.Errorf("the data directories belong to cluster %s, not --cluster %s", dirCluster, cluster))
		}
		cluster, nodes = dirCluster, mergeNodes(nodes, dirNodes)
	}
	admin, err := f.admin()
	if err != nil {
		return err
	}
	c := buildAuthConfig(f.prefix, cluster, nodes, admin)
	switch f.writeOut {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	case "nsc":
		fmt.Fprint(g.stdout, c.nscCommands(f.account))
	default:
		fmt.Fprint(g.stdout, c.serverConf())
	}
	if f.adminKeyOut != "" {
		fmt.Fprintf(g.stderr, "admin nkey %s: seed written to %s; run 'raftbus member ... --nkey %s'\n", admin.Nkey, f.adminKeyOut, f.adminKeyOut)
	}
	return nil
}

// admin builds the admin user the flags describe, generating its key
// when asked.
func (f *natsConfigFlags) admin() (authUser, error) {
	switch {
	case f.adminUser != "":
		return authUser{User: f.adminUser, Password: f.adminPass}, nil
	case f.adminNkey != "":
		pub, err := adminPublicKey(f.adminNkey)
		return authUser{Nkey: pub}, err
	}
	pub, err := writeAdminKey(f.adminKeyOut)
	if err != nil {
		return authUser{}, err
	}
	return authUser{Nkey: pub}, nil
}

// adminPublicKey accepts a user public key, or the admin's seed file (as
// written by --admin-key-out) and derives its public key.
func adminPublicKey(keyOrFile string) (string, error) {
	if nkeys.IsValidPublicUserKey(keyOrFile) {
		return keyOrFile, nil
	}
	pub, err := readAdminKey(keyOrFile)
	if err != nil {
		return "", usageErr(fmt.Errorf("--admin-nkey %q is neither a user public key (U...) nor a readable seed file: %w", keyOrFile, err))
	}
	return pub, nil
}

// writeAdminKey generates a user nkey and writes its seed to path (mode
// 0600, refusing to overwrite), returning the public key.
func writeAdminKey(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("generate admin nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", withCode(ExitPrecondition, fmt.Errorf("admin key file: %w", err))
	}
	_, werr := fh.Write(append(seed, '\n'))
	serr := fh.Sync()
	cerr := fh.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return "", fmt.Errorf("write admin key %s: %w", path, err)
	}
	return pub, nil
}

// nodesFromDirs reads the identities of the given data directories; they
// must belong to one cluster. Directories from before keys get one.
func nodesFromDirs(dirs []string) (uuid.UUID, []authNode, error) {
	var cluster uuid.UUID
	var nodes []authNode
	for _, dir := range dirs {
		id, err := datadir.Load(dir)
		if err != nil {
			return uuid.Nil, nil, withCode(ExitPrecondition, fmt.Errorf("%s: %w (create it with 'raftbus node init')", dir, err))
		}
		if id.PublicKey == "" {
			if id, err = datadir.EnsureKey(dir); err != nil {
				return uuid.Nil, nil, err
			}
		}
		if id.ClusterID == uuid.Nil {
			return uuid.Nil, nil, withCode(ExitPrecondition, fmt.Errorf("%s: identity %s has no cluster yet", dir, id))
		}
		if cluster != uuid.Nil && id.ClusterID != cluster {
			return uuid.Nil, nil, withCode(ExitPrecondition, fmt.Errorf("%s belongs to cluster %s, not %s", dir, id.ClusterID, cluster))
		}
		cluster = id.ClusterID
		n := authNode{Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey, Bootstrap: bootstrapsCluster(dir)}
		if id.RaftID != 0 {
			n.RaftID = raftbridge.ID(id.RaftID).String()
		}
		nodes = append(nodes, n)
	}
	return cluster, nodes, nil
}

// bootstrapsCluster reports whether dir's node may create the membership
// stream: it was made to bootstrap and has not completed its first start.
func bootstrapsCluster(dir string) bool {
	rec, err := datadir.LoadFirstStart(dir)
	if err != nil || rec.How != datadir.FirstStartBootstrap {
		return false
	}
	_, err = datadir.LoadStarted(dir)
	return err != nil
}

// nodesFromStream reads the verified announcements of --cluster: every
// incarnation that announced itself with a valid signature by the key it
// announced, minus those a validly signed committed change removed.
func (f *natsConfigFlags) nodesFromStream(ctx context.Context) (uuid.UUID, []authNode, error) {
	cluster, err := uuid.Parse(f.cluster)
	if err != nil {
		return uuid.Nil, nil, usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
	}
	nc, err := f.nats.connect("raftbus-nats-config")
	if err != nil {
		return uuid.Nil, nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return uuid.Nil, nil, withCode(ExitUnreachable, err)
	}
	octx, cancel := context.WithTimeout(ctx, f.nats.timeout)
	defer cancel()
	s, err := membership.OpenStream(octx, membership.StreamConfig{JS: js, Prefix: f.prefix, Cluster: cluster})
	if err != nil {
		return uuid.Nil, nil, withCode(ExitUnreachable, err)
	}
	recs, err := s.ReadAll(octx)
	if err != nil {
		return uuid.Nil, nil, withCode(ExitUnreachable, err)
	}
	// A host removed from group 0 keeps its user while it is a member of
	// another Raft group: tombstones are per group.
	groups, err := s.Groups(octx)
	if err != nil {
		return uuid.Nil, nil, withCode(ExitUnreachable, err)
	}
	inOther := map[uuid.UUID]bool{}
	for _, g := range groups {
		grecs, err := s.InGroup(g).ReadAll(octx, membership.KindCommitted)
		if err != nil {
			return uuid.Nil, nil, withCode(ExitUnreachable, err)
		}
		for _, m := range membership.Rebuild(grecs).Members {
			inOther[m.Incarnation] = true
		}
	}
	return cluster, announcedNodes(recs, inOther), nil
}

// announcedNodes returns the verified announcements' hosts, except those
// group 0 removed that are no member of another group (inOther).
func announcedNodes(recs []membership.Record, inOther map[uuid.UUID]bool) []authNode {
	byInc := map[uuid.UUID]authNode{}
	removed := map[uuid.UUID]bool{}
	for _, r := range recs {
		if r.Invalid != "" || r.Signer == "" {
			continue
		}
		switch {
		case r.Announce != nil && r.Announce.PublicKey == r.Signer && r.Source == r.Announce.Incarnation:
			a := r.Announce
			n := authNode{Name: a.Name, Incarnation: a.Incarnation, PublicKey: a.PublicKey}
			if a.RaftID != 0 {
				n.RaftID = a.RaftID.String()
			}
			byInc[a.Incarnation] = n
		case r.Committed != nil && r.Committed.Op == membership.OpRemove:
			removed[r.Committed.Member.Incarnation] = true
		}
	}
	var out []authNode
	for inc, n := range byInc {
		if !removed[inc] || inOther[inc] {
			out = append(out, n)
		}
	}
	return out
}

// mergeNodes adds the nodes of data directories to those read from the
// stream; a directory's own identity wins for the same incarnation.
func mergeNodes(stream, dirs []authNode) []authNode {
	seen := map[uuid.UUID]bool{}
	for _, n := range dirs {
		seen[n.Incarnation] = true
	}
	out := append([]authNode(nil), dirs...)
	for _, n := range stream {
		if !seen[n.Incarnation] {
			out = append(out, n)
		}
	}
	return out
}
