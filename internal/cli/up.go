package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

func init() { commands = append(commands, newUpCmd) }

type upFlags struct {
	nodes    int
	groups   int
	data     string
	natsPort int
	httpPort int
	noSync   bool
	timeout  time.Duration
	insecure bool
}

func newUpCmd(g *globals) *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up [--nodes 3] [--groups 1] [--data DIR]",
		Short: "Run a local cluster on an embedded NATS server",
		Long: `Start an embedded NATS server with JetStream and a local cluster of raftbus
nodes in this process, print each node's HTTP address, and run until Ctrl-C.

Without --data the cluster lives in a temporary directory removed on exit;
with --data it is kept, and the next 'raftbus up --data DIR' resumes it (a
first run that failed is retried the same way). DIR is locked before
anything starts.

The nodes' and the NATS server's logs go to DIR/raftbus.log (at info, or at
--log-level); stderr shows only warnings and errors, or --log-level when it
is given.

The embedded server is secured like a production one: every node connects
as its own nkey user with the permissions 'raftbus nats-config' generates,
and an admin nkey (written to DIR/admin.nk) is printed for 'raftbus member'.
--insecure runs it open instead: anyone who reaches it can act as any node.

--groups N splits the key space over N Raft groups (a sharded cluster):
every node runs every group, over one NATS connection and one Pebble store,
and idle groups quiesce. The HTTP API is the same. A cluster keeps the group
count it was created with.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, g, f) },
	}
	fs := cmd.Flags()
	fs.IntVar(&f.nodes, "nodes", 3, "number of nodes (1 to 7)")
	fs.IntVar(&f.groups, "groups", 1, fmt.Sprintf("number of Raft groups the key space is split over (1 to %d); fixed when the cluster is created", server.MaxGroups))
	fs.StringVar(&f.data, "data", "", "directory to keep the cluster in (default: a temporary directory)")
	fs.IntVar(&f.natsPort, "nats-port", 0, "port of the embedded NATS server (0: any free port)")
	fs.IntVar(&f.httpPort, "http-port", 0, "HTTP port of the first node; node i uses port+i-1 (0: any free ports)")
	fs.BoolVar(&f.noSync, "no-sync", false, "do not fsync Raft state (faster; a crash may lose acknowledged writes)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the cluster to come up")
	fs.BoolVar(&f.insecure, "insecure", false, "run the embedded NATS server without authentication or permissions")
	return cmd
}

func (f *upFlags) validate() error {
	if f.nodes < 1 || f.nodes > 7 {
		return fmt.Errorf("--nodes must be between 1 and 7, got %d", f.nodes)
	}
	if f.groups < 1 || f.groups > server.MaxGroups {
		return fmt.Errorf("--groups must be between 1 and %d, got %d", server.MaxGroups, f.groups)
	}
	if f.natsPort < 0 || f.natsPort > 65535 {
		return fmt.Errorf("--nats-port %d is not a port", f.natsPort)
	}
	if f.httpPort < 0 || f.httpPort+f.nodes-1 > 65535 {
		return fmt.Errorf("--http-port %d leaves no room for %d nodes", f.httpPort, f.nodes)
	}
	return nil
}

func runUp(cmd *cobra.Command, g *globals, f *upFlags) (err error) {
	ctx := cmd.Context()
	if err := f.validate(); err != nil {
		return usageErr(err)
	}
	out := g.stdout
	dir := f.data
	if dir == "" {
		if dir, err = os.MkdirTemp("", "raftbus-up-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	// The directory is locked before anything starts: a second 'up' on it
	// must not start a second NATS server on the same JetStream store.
	unlock, err := lockUpDir(dir)
	if err != nil {
		return err
	}
	defer func() { _ = unlock() }()
	logPath := filepath.Join(dir, upLogFile)
	log, closeLog, err := upLogger(cmd, g, logPath)
	if err != nil {
		return err
	}
	defer closeLog()
	defer func() {
		switch {
		case err == nil || codeOf(err) == ExitUsage:
		case errors.Is(err, context.Canceled):
			err = withCode(ExitInterrupted, errors.New("interrupted before the cluster was up"))
		default:
			err = fmt.Errorf("%w (node and NATS logs: %s)", err, logPath)
		}
	}()
	step := func(format string, args ...any) func(error) {
		fmt.Fprintf(out, "• "+format+" ... ", args...)
		return func(err error) {
			if err != nil {
				fmt.Fprintln(out, "failed")
			} else {
				fmt.Fprintln(out, "ok")
			}
		}
	}

	idents, bootstrap, how, err := upIdentities(dir, f.nodes)
	if err != nil {
		return err
	}
	switch how {
	case upResumed:
		fmt.Fprintf(out, "resumed cluster %s from %s\n", idents[0].ClusterID, dir)
	case upRetried:
		fmt.Fprintf(out, "retrying the first start of cluster %s in %s\n", idents[0].ClusterID, dir)
	}
	var auth *upAuth
	if !f.insecure {
		if auth, err = newUpAuth(dir, idents, bootstrap != nil); err != nil {
			return err
		}
	}
	done := step("starting embedded NATS server with JetStream")
	ns, err := startEmbeddedNATS(filepath.Join(dir, "nats"), f.natsPort, auth, log)
	done(err)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if auth == nil {
		fmt.Fprintf(out, "  NATS: %s (insecure: no authentication, anyone who reaches it can act as any node)\n", ns.ClientURL())
	} else {
		fmt.Fprintf(out, "  NATS: %s (secured: one nkey user per node; the CLI authenticates with --nkey %s)\n", ns.ClientURL(), auth.adminSeed)
	}
	// The embedded server is the only one: no nats context applies.
	connFlags := natsFlags{server: ns.ClientURL(), timeout: 5 * time.Second, contextDone: true}
	var servers []*server.Server
	var conns []*nats.Conn
	// Nodes stop before their connections close, or they log the closed
	// connection as a failure.
	defer func() {
		for _, s := range servers {
			s.Halt()
		}
		for _, nc := range conns {
			nc.Close()
		}
	}()
	// An open server is what --insecure asked for: the node's warning
	// about it goes to the log file only.
	connLog := log
	if f.insecure {
		connLog = slog.New(dropBelow(log.Handler(), slog.LevelError))
	}
	for i, id := range idents {
		done := step("starting node %s (raft ID %s)", id.Name, raftbridge.ID(id.RaftID).String())
		nc, err := connectNode(&connFlags, "raftbus-up-"+id.Name, filepath.Join(dir, id.Name), id, connLog)
		if err != nil {
			done(err)
			return err
		}
		conns = append(conns, nc)
		listen := "127.0.0.1:0"
		if f.httpPort != 0 {
			listen = fmt.Sprintf("127.0.0.1:%d", f.httpPort+i)
		}
		s, err := server.Start(server.Config{
			DataDir: filepath.Join(dir, id.Name), Conn: nc, Listen: listen, Bootstrap: bootstrap,
			NoSync: f.noSync, Logger: log, Groups: f.groups,
		})
		done(err)
		if err != nil {
			return fmt.Errorf("node %s: %w", id.Name, err)
		}
		servers = append(servers, s)
	}

	done = step("waiting for a leader")
	lead, err := waitLeader(ctx, servers, f.timeout)
	done(err)
	if err != nil {
		return err
	}
	printUpSummary(out, idents[0].ClusterID, servers, lead)
	if auth != nil {
		fmt.Fprintf(out, "  raftbus member list -s %s --nkey %s --cluster %s\n", ns.ClientURL(), auth.adminSeed, idents[0].ClusterID)
		fmt.Fprintf(out, "  raftbus endpoint health -s %s --nkey %s --cluster %s\n", ns.ClientURL(), auth.adminSeed, idents[0].ClusterID)
	} else {
		fmt.Fprintf(out, "  raftbus endpoint health -s %s --cluster %s\n", ns.ClientURL(), idents[0].ClusterID)
	}
	fmt.Fprintf(out, "\nLogs: %s\nPress Ctrl-C to stop.\n", logPath)

	var stopped error
	select {
	case <-ctx.Done():
	case <-anyDone(servers):
		for _, s := range servers {
			if e := s.Node().Err(); e != nil {
				stopped = fmt.Errorf("node %s stopped: %w", s.Identity().Name, e)
				break
			}
		}
		if stopped == nil {
			stopped = errors.New("a node stopped unexpectedly")
		}
		log.Error("shutting the cluster down", "cause", stopped)
	}
	fmt.Fprintln(out, "\nstopping ...")
	// The whole cluster stops: handing leadership around first is pointless.
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.Halt() }()
	}
	wg.Wait()
	servers = nil
	fmt.Fprintln(out, "stopped")
	return stopped
}

// lockUpDir locks the cluster directory of 'raftbus up', saying plainly
// when --data is a file, is not writable, or is in use.
func lockUpDir(dir string) (func() error, error) {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, usageErr(fmt.Errorf("--data %s is a file, not a directory", dir))
	}
	unlock, err := datadir.Lock(dir)
	switch {
	case errors.Is(err, datadir.ErrLocked):
		return nil, withCode(ExitPrecondition, fmt.Errorf("%w: is another 'raftbus up --data %s' running?", err, dir))
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("--data %s is not writable: %w", dir, err)
	case err != nil:
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	}
	return unlock, nil
}

// How 'raftbus up' found its directory.
const (
	upCreated = iota // a new cluster
	upResumed        // a cluster that had started before
	upRetried        // a cluster whose first start failed: it bootstraps again
)

// upIdentities loads the nodes of a kept cluster, or creates new ones when
// dir holds none. A partial cluster, or one of another size, is refused.
// The bootstrap members are returned for a new cluster, and again while
// any node's first start has not succeeded (its FIRST_START record says it
// bootstraps and it has no STARTED record): a failed first 'up' is retried
// by running it again. Nodes that did start ignore them.
func upIdentities(dir string, n int) ([]*datadir.Identity, []node.Member, int, error) {
	nodeDir := func(i int) string { return filepath.Join(dir, fmt.Sprintf("n%d", i)) }
	idents := make([]*datadir.Identity, n)
	existing := 0
	for i := range idents {
		id, err := datadir.Load(nodeDir(i + 1))
		switch {
		case err == nil:
			idents[i] = id
			existing++
		case !errors.Is(err, datadir.ErrNoIdentity):
			return nil, nil, 0, err
		}
	}
	if _, err := datadir.Load(nodeDir(n + 1)); err == nil || (existing > 0 && existing < n) {
		return nil, nil, 0, withCode(ExitPrecondition, fmt.Errorf("%s holds a cluster of another size than --nodes %d", dir, n))
	}
	if existing == n {
		retry := false
		for i, id := range idents {
			if id.ClusterID != idents[0].ClusterID {
				return nil, nil, 0, withCode(ExitPrecondition, fmt.Errorf("%s mixes nodes of clusters %s and %s", dir, idents[0].ClusterID, id.ClusterID))
			}
			if _, err := datadir.LoadStarted(nodeDir(i + 1)); !errors.Is(err, datadir.ErrNotStarted) {
				continue
			}
			if rec, err := datadir.LoadFirstStart(nodeDir(i + 1)); err == nil && rec.How == datadir.FirstStartBootstrap {
				retry = true
			}
		}
		if !retry {
			return idents, nil, upResumed, nil
		}
		return idents, upMembers(idents), upRetried, nil
	}
	cluster := uuid.New()
	for i := range idents {
		d := nodeDir(i + 1)
		id, err := datadir.Create(d, datadir.Identity{ClusterID: cluster, RaftID: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1)})
		if err != nil {
			return nil, nil, 0, err
		}
		if err := datadir.RecordFirstStart(d, id, datadir.FirstStartBootstrap); err != nil {
			return nil, nil, 0, err
		}
		idents[i] = id
	}
	return idents, upMembers(idents), upCreated, nil
}

func upMembers(idents []*datadir.Identity) []node.Member {
	ms := make([]node.Member, len(idents))
	for i, id := range idents {
		ms[i] = node.Member{ID: raftbridge.ID(id.RaftID), Name: id.Name, Incarnation: id.Incarnation, PublicKey: id.PublicKey}
	}
	return ms
}

func startEmbeddedNATS(storeDir string, port int, auth *upAuth, log *slog.Logger) (*natsserver.Server, error) {
	if port == 0 {
		port = -1
	} else {
		// Said now and plainly, rather than as a server that never starts.
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return nil, fmt.Errorf("--nats-port %d: %w", port, err)
		}
		_ = ln.Close()
	}
	opts := &natsserver.Options{
		ServerName: "raftbus-up", Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: storeDir, JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 1 << 30,
	}
	if auth != nil {
		opts.Nkeys, opts.Users = auth.config.serverUsers()
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	nl := &natsLogger{log: log}
	ns.SetLoggerV2(nl, false, false, false)
	go ns.Start()
	deadline := time.Now().Add(10 * time.Second)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		if msg := nl.firstError(); msg != "" {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server: %s", msg)
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server did not start on port %d within 10s", port)
		}
	}
	return ns, nil
}

// dropBelow filters out records below min.
func dropBelow(h slog.Handler, min slog.Level) slog.Handler { return levelFilter{h, min} }

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (l levelFilter) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{l.Handler.WithAttrs(as), l.min}
}

func (l levelFilter) WithGroup(name string) slog.Handler {
	return levelFilter{l.Handler.WithGroup(name), l.min}
}

func waitLeader(ctx context.Context, servers []*server.Server, timeout time.Duration) (*server.Server, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, s := range servers {
			if l := s.Node().Leader(); l != 0 {
				for _, c := range servers {
					if c.Identity().RaftID == l {
						return c, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("no leader elected within %v", timeout)
		case <-tick.C:
		}
	}
}

func anyDone(servers []*server.Server) <-chan struct{} {
	ch := make(chan struct{})
	for _, s := range servers {
		go func() {
			<-s.Done()
			defer func() { _ = recover() }() // closed twice when two stop
			close(ch)
		}()
	}
	return ch
}

func printUpSummary(out io.Writer, cluster uuid.UUID, servers []*server.Server, lead *server.Server) {
	fmt.Fprintf(out, "\nraftbus cluster %s is up\n\n", cluster)
	fmt.Fprintf(out, "  %-5s %-16s %-36s %s\n", "NAME", "RAFT ID", "INCARNATION", "HTTP")
	for _, s := range servers {
		id := s.Identity()
		mark := ""
		if s == lead {
			mark = "  (leader)"
		}
		fmt.Fprintf(out, "  %-5s %-16s %-36s %s%s\n", id.Name, raftbridge.ID(id.RaftID).String(), id.Incarnation, s.URL(), mark)
	}
	a, b := servers[0].URL(), servers[len(servers)-1].URL()
	fmt.Fprintf(out, "\nTry it:\n")
	fmt.Fprintf(out, "  curl -X PUT %s/kv/greeting -d 'hello'\n", a)
	fmt.Fprintf(out, "  curl %s/kv/greeting\n", b)
	fmt.Fprintf(out, "  curl %s/status\n", b)
}
