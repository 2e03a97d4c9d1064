package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

func init() { commands = append(commands, newNodeCmd) }

type nodeFlags struct {
	nats      natsFlags
	data      string
	name      string
	listen    string
	prefix    string
	bootstrap bool
	join      bool
	replicas  int
	cluster   string
	raftID    string
	noSync    bool
	tick      time.Duration
	snapEvery uint64
	groups    int
	// HTTP API security (server.Config's TLS and token fields).
	tlsCert, tlsKey, clientCA, tokenFile string
}

func newNodeCmd(g *globals) *cobra.Command {
	f := &nodeFlags{}
	cmd := &cobra.Command{
		Use:   "node --data DIR --name NAME -s NATS_URL [--bootstrap]",
		Short: "Run one raftbus node against a NATS server or cluster",
		Long: `Run one raftbus node: durable Raft state in --data, Raft traffic over NATS on
subjects of this node's incarnation, and the key-value HTTP API on --listen.

The first start with --bootstrap creates a new single-node cluster. A node
started with --join --cluster ID creates its incarnation, announces itself on
the cluster's membership stream and waits until an operator runs
'raftbus member add NAME'; then it starts and catches up from the leader.
Restarts reuse the identity stored in the data directory; --cluster,
--raft-id and --name, when given, must match it. A first start that failed
(HTTP port taken, NATS unreachable, bad credentials) is retried by running
the same command again. Once a node has started, its Raft state must never
be lost: a node whose raft/ directory is gone is refused, with --join or
without; remove it from the cluster, wipe its data directory and add it
again as a new member.

--join on a new data directory takes the cluster from --cluster on the
command line only, never from $RAFTBUS_CLUSTER alone: joining makes the new
incarnation a member for good. A node that was removed from its cluster
stops and exits with code 10.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runNode(cmd, g, f) },
	}
	cmd.AddCommand(newNodeInitCmd(g))
	fs := cmd.Flags()
	f.nats.register(fs)
	f.nats.registerNodeAuth(fs)
	f.nats.namedContextOnly = true
	fs.StringVar(&f.data, "data", envOr("RAFTBUS_DATA", ""), "data directory ($RAFTBUS_DATA)")
	fs.StringVar(&f.name, "name", envOr("RAFTBUS_NAME", ""), "node name ($RAFTBUS_NAME)")
	fs.StringVar(&f.listen, "listen", envOr("RAFTBUS_LISTEN", "127.0.0.1:8001"), "HTTP API address ($RAFTBUS_LISTEN)")
	fs.StringVar(&f.prefix, "prefix", envOr("RAFTBUS_PREFIX", "raftbus"), "NATS subject prefix ($RAFTBUS_PREFIX)")
	fs.BoolVar(&f.bootstrap, "bootstrap", false, "create a new single-node cluster if the data directory is new")
	fs.BoolVar(&f.join, "join", false, "join the existing cluster --cluster: announce this node and wait for 'raftbus member add NAME'")
	fs.IntVar(&f.replicas, "members-replicas", 1, "replicas of the membership stream if this node creates it (3 on a three-server NATS cluster)")
	fs.StringVar(&f.cluster, "cluster", envOr("RAFTBUS_CLUSTER", ""), "expected cluster ID ($RAFTBUS_CLUSTER)")
	fs.StringVar(&f.raftID, "raft-id", "", "expected Raft ID, in hex")
	fs.BoolVar(&f.noSync, "no-sync", false, "do not fsync Raft state (benchmarks only: a crash may lose acknowledged writes)")
	fs.DurationVar(&f.tick, "tick", 100*time.Millisecond, "Raft tick interval")
	fs.Uint64Var(&f.snapEvery, "snapshot-entries", 10000, "take a snapshot every this many applied entries")
	fs.IntVar(&f.groups, "groups", 1, fmt.Sprintf("number of Raft groups the key space is split over (1 to %d); every member of a cluster must run the count the cluster was created with", server.MaxGroups))
	fs.StringVar(&f.tlsCert, "listen-tls-cert", envOr("RAFTBUS_LISTEN_TLS_CERT", ""), "serve the HTTP API over TLS with this PEM certificate ($RAFTBUS_LISTEN_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "listen-tls-key", envOr("RAFTBUS_LISTEN_TLS_KEY", ""), "the PEM key of --listen-tls-cert ($RAFTBUS_LISTEN_TLS_KEY)")
	fs.StringVar(&f.clientCA, "listen-client-ca", envOr("RAFTBUS_LISTEN_CLIENT_CA", ""), "verify HTTP client certificates against this PEM CA bundle; a verified certificate authorises requests ($RAFTBUS_LISTEN_CLIENT_CA)")
	fs.StringVar(&f.tokenFile, "http-token-file", envOr("RAFTBUS_HTTP_TOKEN_FILE", ""), "require 'Authorization: Bearer <token>' (or a verified client certificate) on every HTTP endpoint but /healthz and /readyz; the file holds the token ($RAFTBUS_HTTP_TOKEN_FILE)")
	return cmd
}

func (f *nodeFlags) expect() (datadir.Expect, error) {
	want := datadir.Expect{Name: f.name, Source: "the command line"}
	if f.cluster != "" {
		id, err := uuid.Parse(f.cluster)
		if err != nil {
			return want, usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
		}
		want.ClusterID = id
	}
	if f.raftID != "" {
		id, err := raftbridge.ParseID(f.raftID)
		if err != nil {
			return want, usageErr(fmt.Errorf("--raft-id: %w", err))
		}
		want.RaftID = uint64(id)
	}
	return want, nil
}

func runNode(cmd *cobra.Command, g *globals, f *nodeFlags) error {
	if f.groups < 1 || f.groups > server.MaxGroups {
		return usageErr(fmt.Errorf("--groups must be between 1 and %d, got %d", server.MaxGroups, f.groups))
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	if f.data == "" {
		return usageErr(errors.New("--data is required"))
	}
	if f.tick <= 0 {
		return usageErr(fmt.Errorf("--tick must be positive, got %v", f.tick))
	}
	want, err := f.expect()
	if err != nil {
		return err
	}
	if f.bootstrap && f.join {
		return usageErr(errors.New("--bootstrap and --join cannot be used together"))
	}
	if f.join && (want.ClusterID == uuid.Nil || f.name == "") {
		return usageErr(errors.New("--join needs --cluster (the cluster to join) and --name"))
	}
	id, err := datadir.Load(f.data)
	fresh := errors.Is(err, datadir.ErrNoIdentity) || errors.Is(err, os.ErrNotExist)
	// Joining makes a new incarnation a member of a cluster for good: the
	// cluster must be named on the command line, not taken from a
	// RAFTBUS_CLUSTER left in the environment by another task. For an
	// existing directory the environment only checks its identity.
	if fresh && f.join && fromEnv(cmd, "cluster") {
		return usageErr(fmt.Errorf("--join of a new data directory needs --cluster on the command line; $RAFTBUS_CLUSTER (%s) is not used to join: pass --cluster $RAFTBUS_CLUSTER to mean it", f.cluster))
	}
	switch {
	case fresh && f.join:
		if id, err = datadir.Create(f.data, datadir.Identity{ClusterID: want.ClusterID, Name: f.name}); err != nil {
			return err
		}
		log.Info("created a new incarnation to join the cluster", "cluster", id.ClusterID, "incarnation", id.Incarnation)
	case fresh:
		if !f.bootstrap {
			return withCode(ExitPrecondition, fmt.Errorf("data directory %s is new: pass --bootstrap to create a new cluster, or --join --cluster ID to join one", f.data))
		}
		if id, err = createForBootstrap(f, want); err != nil {
			return err
		}
		log.Info("created a new cluster", "cluster", id.ClusterID, "raft_id", raftbridge.ID(id.RaftID).String(), "incarnation", id.Incarnation)
	case err != nil:
		return err
	}
	if err := id.Check(want); err != nil {
		return withCode(ExitPrecondition, err)
	}
	nc, err := connectNode(&f.nats, "raftbus-node-"+id.Name, f.data, id, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if id.RaftID == 0 {
		if !f.join {
			return withCode(ExitPrecondition, fmt.Errorf("data directory %s has not been added to cluster %s yet: start it with --join", f.data, id.ClusterID))
		}
		// Before the Raft ID is assigned: an identity with a Raft ID and no
		// record can then only have been made by an older raftbus (or by a
		// --bootstrap interrupted before its record), never by a join.
		if err := datadir.RecordFirstStart(f.data, id, datadir.FirstStartJoin); err != nil {
			return err
		}
		if id, err = awaitAdmission(cmd.Context(), g, f, nc, id); err != nil {
			return err
		}
	}
	bootstrap, joining, err := firstStartOf(f.data, id)
	if err != nil {
		return err
	}
	srv, err := server.Start(server.Config{
		DataDir: f.data, Expect: want, Conn: nc, Prefix: f.prefix, Listen: f.listen,
		Bootstrap: bootstrap, Joining: joining, NoSync: f.noSync, Logger: log, MembersReplicas: f.replicas,
		Node: node.Config{TickInterval: f.tick, SnapshotEntries: f.snapEvery}, Groups: f.groups,
		TLSCertFile: f.tlsCert, TLSKeyFile: f.tlsKey, ClientCAFile: f.clientCA, HTTPTokenFile: f.tokenFile,
	})
	if errors.Is(err, server.ErrNeverStarted) {
		err = fmt.Errorf("%w. %s carries no record of how it was to start (it was made by an older raftbus, or a --bootstrap was interrupted right after creating it); "+
			"if it never served, or its Raft log was lost, wipe it and bootstrap or join again", err, f.data)
	}
	if err != nil {
		return withCode(ExitPrecondition, err)
	}
	fmt.Fprintf(g.stdout, "raftbus node %s (raft ID %s, incarnation %s) of cluster %s serving %s\n",
		id.Name, raftbridge.ID(id.RaftID).String(), id.Incarnation, id.ClusterID, srv.URL())
	select {
	case <-cmd.Context().Done():
		srv.Stop()
		return nil
	case <-srv.Done():
		err := srv.Node().Err()
		srv.Stop()
		return stoppedErr(err, id, f.data)
	}
}

// stoppedErr explains why a node stopped by itself; a removed node exits
// with its own code, so that a supervisor does not restart it.
func stoppedErr(err error, id *datadir.Identity, dir string) error {
	if errors.Is(err, node.ErrRemoved) {
		return withCode(ExitRemoved, fmt.Errorf("this node (raft ID %s, incarnation %s) was removed from cluster %s; wipe %s before this machine rejoins as a new member",
			raftbridge.ID(id.RaftID).String(), id.Incarnation, id.ClusterID, dir))
	}
	return fmt.Errorf("node stopped: %w", err)
}

// createForBootstrap creates the identity of a new single-node cluster and
// records that it bootstraps, so that a first start that fails (HTTP port
// taken, NATS down, a bad URL or credentials) bootstraps the same cluster
// ID and Raft ID when it is retried.
func createForBootstrap(f *nodeFlags, want datadir.Expect) (*datadir.Identity, error) {
	cluster := want.ClusterID
	if cluster == uuid.Nil {
		cluster = uuid.New()
	}
	raftID := want.RaftID
	if raftID == 0 {
		raftID = 1
	}
	id, err := datadir.Create(f.data, datadir.Identity{ClusterID: cluster, RaftID: raftID, Name: f.name})
	if err != nil {
		return nil, err
	}
	if err := datadir.RecordFirstStart(f.data, id, datadir.FirstStartBootstrap); err != nil {
		return nil, err
	}
	return id, nil
}

// firstStartOf says how to start a directory whose first start has not
// succeeded yet, from the way recorded when its identity was made: with the
// bootstrap members, or as a joiner. After the first start succeeded (and
// for directories without a record) it returns neither: the server then
// restarts from the Raft state and refuses an empty one. The --bootstrap and
// --join flags only decide how a new directory is made.
func firstStartOf(dir string, id *datadir.Identity) (bootstrap []node.Member, joining bool, err error) {
	_, err = datadir.LoadStarted(dir)
	switch {
	case err == nil:
		return nil, false, nil
	case !errors.Is(err, datadir.ErrNotStarted):
		return nil, false, err
	}
	rec, err := datadir.LoadFirstStart(dir)
	switch {
	case errors.Is(err, datadir.ErrNoFirstStart):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	case rec.Incarnation != id.Incarnation:
		return nil, false, fmt.Errorf("%w: %s belongs to incarnation %s, not to this directory's %s",
			datadir.ErrBadFormat, datadir.FirstStartFile, rec.Incarnation, id.Incarnation)
	case rec.How == datadir.FirstStartBootstrap:
		return []node.Member{{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation}}, false, nil
	}
	return nil, true, nil
}
