// Package server assembles a complete raftbus node process: the data
// directory and its identity, durable Raft storage, the NATS bus, the node
// runtime, the key-value state machine and its HTTP API. The raftbus
// command, the local demo cluster and the integration tests all start nodes
// through it, so they run exactly the same wiring.
//
// The HTTP API (kv.NewHandler) is plain HTTP on Config.Listen unless
// Config.TLSCertFile and TLSKeyFile are set; Config.ClientCAFile adds
// mutual TLS and Config.HTTPTokenFile a bearer token, and with either every
// endpoint but the probes requires authentication. GET /healthz (the node
// runs and its data directory takes a write) and GET /readyz (a leader is
// known and a read barrier completes within Config.ReadyTimeout) answer
// 200 or 503 with a one-line reason, for Kubernetes probes. Every metric of
// the node, the transport, the bus and the storage is registered on one
// registry served on GET /metrics (README, "Metrics").
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// Config configures a Server.
type Config struct {
	// DataDir holds the node's identity and Raft state. Required; its
	// identity must already name a cluster and a Raft ID (the raftbus
	// command creates it when it bootstraps or joins).
	DataDir string
	// Expect is checked against the directory's identity; a mismatch
	// refuses to start, naming both sides.
	Expect datadir.Expect
	// Conn is the NATS connection. Required; the server does not close it.
	Conn *nats.Conn
	// Prefix is the subject prefix. Default bus.DefaultPrefix.
	Prefix string
	// Listen is the HTTP API address. Default 127.0.0.1:0 (any free port).
	Listen string
	// Bootstrap lists the initial members of a new cluster, this node
	// included. It is used only while the Raft state is empty and the
	// directory's first start has not succeeded (a retry after a failed
	// first start bootstraps again, with the same identity).
	Bootstrap []node.Member
	// Joining says the node was added to an existing cluster and waits for
	// the leader to send it the Raft state. Like Bootstrap it only permits
	// empty Raft state before the first start succeeded.
	//
	// The rule: the first time the node's Raft state becomes durable, Start
	// records it in the data directory (datadir.MarkStarted). From then on,
	// empty Raft state is refused with ErrLostLog whatever Bootstrap and
	// Joining say: the log was lost, and a member that may have voted must
	// not come back as itself. Before that, empty state needs Bootstrap or
	// Joining (else ErrNeverStarted).
	Joining bool
	// Groups is the number of Raft groups the node runs; the key space is
	// split over them (kv.ShardOf) and every member of the cluster runs
	// every group. With more than one, all groups share one NATS
	// subscription and one send queue per peer (raftbridge.Host), one
	// tick (node.Host, which quiesces idle groups) and one Pebble store
	// with one WAL (raftstore.Host). A cluster keeps the group count it
	// was created with; a data directory started with another count is
	// refused. Default 1: a single group, with the single-group wire
	// format and data layout. At most MaxGroups.
	Groups int
	// NoSync turns off fsync of Raft state: for benchmarks and tests only;
	// a crash may lose acknowledged writes.
	NoSync bool
	// Node tunes the node runtime (tick, snapshots, ...); identity, storage,
	// bus, state machine and logging fields are filled in by Start.
	Node node.Config
	// MembersReplicas is the replica count of the membership stream when
	// this node creates it: 3 on a three-server NATS cluster. Default 1.
	MembersReplicas int
	// MaxValueBytes bounds a value written through the HTTP API. Default
	// 512 KiB (it must fit one Raft entry within one NATS message).
	MaxValueBytes int64
	// TLSCertFile and TLSKeyFile, if set (both or neither), serve the HTTP
	// API over TLS (1.2 or later) with this PEM certificate and key; URL
	// then starts with https. Default: plain HTTP.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile, if set, is a PEM bundle of CAs whose client
	// certificates the TLS server verifies (mutual TLS); a request over a
	// connection with a verified client certificate is authorised. Clients
	// without a certificate may still connect (the health probes need
	// none) but are held to HTTPTokenFile. Requires TLS.
	ClientCAFile string
	// HTTPTokenFile, if set, names a file holding the bearer token that
	// authorises requests (surrounding whitespace is ignored; the token is
	// never logged). With it or ClientCAFile, every endpoint but /healthz
	// and /readyz requires authentication (kv.Auth). Default: none, and
	// the API is open to whoever reaches Listen.
	HTTPTokenFile string
	// ReadyTimeout bounds the read barrier behind GET /readyz: a node that
	// cannot catch up with the leader's commit index within it is not
	// ready. Default DefaultReadyTimeout (2 s).
	ReadyTimeout time.Duration
	// Logger receives all logs. Default: discard.
	Logger *slog.Logger
}

// Server is a running node process.
type Server struct {
	cfg      Config
	log      *slog.Logger
	identity *datadir.Identity
	unlock   func() error
	store    *raftstore.Store // group 0's
	kv       *kv.Store        // group 0's
	bus      *natsbus.Bus
	node     *node.Node          // group 0's
	members  *membership.Manager // group 0's
	groups   []*group            // every group, group 0 first
	rhost    *raftstore.Host     // with more than one group
	bhost    *raftbridge.Host    // with more than one group
	nhost    *node.Host          // with more than one group
	done     chan struct{}       // closed when every group's node stopped
	key      nkeys.KeyPair       // the incarnation's key: signs membership records
	status   *nats.Subscription
	registry *prometheus.Registry
	http     *http.Server
	addr     string
	tls      bool // the HTTP API is served over TLS

	probeMu   sync.Mutex // held while a /healthz probe write is in flight
	sizeCache statusCache

	stopOnce sync.Once
	httpDone chan struct{}
	// firstStop ends recordFirstStart; firstDone is closed when it ended
	// (at once if this was not a first start).
	firstStop, firstDone chan struct{}
}

// validate fills the defaults and rejects unusable values.
func (c *Config) validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("server: a data directory is required")
	case c.Conn == nil:
		return errors.New("server: a NATS connection is required")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("server: a TLS certificate needs its key and a key its certificate (TLSCertFile and TLSKeyFile)")
	case c.ClientCAFile != "" && c.TLSCertFile == "":
		return errors.New("server: a client CA (mutual TLS) needs TLS: set TLSCertFile and TLSKeyFile")
	case c.ReadyTimeout < 0:
		return errors.New("server: ReadyTimeout must not be negative")
	case c.Groups < 0 || c.Groups > MaxGroups:
		return fmt.Errorf("server: Groups must be 1 to %d, not %d", MaxGroups, c.Groups)
	}
	if c.Groups == 0 {
		c.Groups = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = 512 << 10
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	return nil
}

// Start opens the data directory and starts the node and its HTTP API.
func Start(cfg Config) (_ *Server, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// TLS material and the token are read before anything is locked or
	// opened: a typo in a path fails the start with nothing to undo.
	tlsConf, auth, err := loadHTTPSecurity(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{tls: tlsConf != nil, cfg: cfg, httpDone: make(chan struct{}), firstStop: make(chan struct{}), firstDone: make(chan struct{}),
		done: make(chan struct{})}
	// Undo whatever was opened if a later step fails.
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	unlock, err := datadir.Lock(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = unlock() })
	s.unlock = unlock
	id, err := datadir.Load(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if id, s.key, err = loadKey(cfg.DataDir, id); err != nil {
		return nil, err
	}
	var keyless []string
	if cfg.Bootstrap, keyless, err = bootstrapKeys(cfg.Bootstrap, id); err != nil {
		return nil, err
	}
	s.cfg.Bootstrap = cfg.Bootstrap
	if err := id.Check(cfg.Expect); err != nil {
		return nil, err
	}
	if id.ClusterID == uuid.Nil || id.RaftID == 0 {
		return nil, fmt.Errorf("server: %s: it has no cluster or Raft ID yet (a joining node gets its Raft ID from 'raftbus member add')", id)
	}
	s.identity = id
	s.log = cfg.Logger.With("node", id.Name)
	if len(keyless) > 0 {
		s.log.Warn("bootstrap members without a public key: membership records they sign will be rejected by every reader", "members", keyless)
	}

	// Listen first: a port that is taken fails the start before anything
	// is written.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen for HTTP on %s: %w", cfg.Listen, err)
	}
	closers = append(closers, func() { _ = ln.Close() })
	s.addr = ln.Addr().String()
	s.warnExposure(ln.Addr(), auth)

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoCollector(), s.storageCollector())
	if err := s.openStorage(); err != nil {
		if s.rhost != nil {
			_ = s.rhost.Close()
		}
		return nil, err
	}
	closers = append(closers, func() { _ = s.closeStorage() })
	firstStart, err := s.checkRaftState()
	if err != nil {
		return nil, err
	}
	if err := s.checkGroups(firstStart); err != nil {
		return nil, err
	}

	s.bus, err = natsbus.New(natsbus.Config{
		Conn: cfg.Conn, Prefix: cfg.Prefix, Cluster: id.ClusterID, Self: id.Incarnation,
		Logger: s.log, Registerer: s.registry,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = s.bus.Close() })

	nc := cfg.Node
	nc.Cluster, nc.ID, nc.Incarnation, nc.Name = id.ClusterID, id.RaftID, id.Incarnation, id.Name
	nc.ClientURL = s.URL()
	nc.Peers = cfg.Bootstrap
	nc.Bus = s.bus
	nc.Logger, nc.Registerer = s.log, s.registry
	if err := s.startHosts(nc); err != nil {
		return nil, err
	}
	closers = append(closers, func() { s.stopNodes(true) })
	if err := s.startNodes(nc); err != nil {
		return nil, err
	}
	go s.watchNodes()

	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("server: JetStream: %w", err)
	}
	host, _ := os.Hostname()
	closers = append(closers, s.stopMembers)
	for _, gr := range s.groups {
		gr.members, err = membership.StartManager(membership.ManagerConfig{
			Stream:  membership.StreamConfig{JS: js, Prefix: s.prefix(), Cluster: id.ClusterID, Replicas: cfg.MembersReplicas, Group: gr.id},
			Cluster: clusterAdapter{gr.node},
			Announce: membership.Announce{Name: id.Name, ClientURL: s.URL(), DataDir: cfg.DataDir, Host: host,
				Software: "raftbus"},
			SkipAnnounce: gr.id != 0, // one announcement per host
			Signer:       s.key,
			Logger:       s.log.With("group", gr.id),
		})
		if err != nil {
			return nil, fmt.Errorf("server: membership of group %d: %w", gr.id, err)
		}
	}
	s.members = s.groups[0].members
	s.status, err = membership.ServeStatus(cfg.Conn, s.prefix(), id.ClusterID, s.nodeStatus)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = s.status.Unsubscribe() })

	hc := kv.HandlerConfig{
		Status:        func() any { return s.Status() },
		Metrics:       promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}),
		Healthz:       s.healthz,
		Readyz:        s.readyz,
		Auth:          auth,
		MaxValueBytes: cfg.MaxValueBytes,
		Logger:        s.log,
	}
	if s.multi() {
		hc.Shards = s.shards()
	} else {
		hc.Store, hc.Cluster = s.kv, s.node
	}
	h, err := kv.NewHandler(hc)
	if err != nil {
		return nil, err
	}
	s.http = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConf,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go func() {
		defer close(s.httpDone)
		serve := func() error { return s.http.Serve(ln) }
		if tlsConf != nil {
			serve = func() error { return s.http.ServeTLS(ln, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", err)
		}
	}()
	if firstStart {
		go s.recordFirstStart()
	} else {
		close(s.firstDone)
	}
	s.log.Info("serving HTTP API", "url", s.URL())
	return s, nil
}

func (s *Server) prefix() string {
	if s.cfg.Prefix == "" {
		return bus.DefaultPrefix
	}
	return s.cfg.Prefix
}

// URL is the base URL of the node's HTTP API.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// Node returns the node runtime (of group 0, with many groups).
func (s *Server) Node() *node.Node { return s.node }

// KV returns the node's key-value state machine (of group 0, with many
// groups).
func (s *Server) KV() *kv.Store { return s.kv }

// Groups returns the number of Raft groups the server runs.
func (s *Server) Groups() int { return len(s.groups) }

// GroupNode returns group g's node, nil for a group the server does not
// run.
func (s *Server) GroupNode(g int) *node.Node {
	if g < 0 || g >= len(s.groups) {
		return nil
	}
	return s.groups[g].node
}

// GroupKV returns group g's key-value state machine, nil for a group the
// server does not run.
func (s *Server) GroupKV(g int) *kv.Store {
	if g < 0 || g >= len(s.groups) {
		return nil
	}
	return s.groups[g].kv
}

// Identity returns the data directory's identity.
func (s *Server) Identity() *datadir.Identity { return s.identity }

// Registry returns the registry behind GET /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Done is closed when the node stopped by itself (it was removed, or its
// storage failed) or after Stop; with many groups, once every group's
// node stopped (a node removed from some groups serves the others).
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop shuts the HTTP API down, stops the node (a leader hands leadership
// over first) and closes the bus, storage and directory lock. It is
// idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.http.Shutdown(ctx)
		<-s.httpDone
		s.stopMembership()
		s.stopNodes(true)
		s.closeResources()
	})
}

// Halt stops the server without handing leadership over and without
// draining HTTP requests: for when the whole cluster stops at once, and to
// simulate a crash in tests (every Save was fsynced when it returned, so
// closing the storage flushes nothing a crash would lose). It is idempotent
// and exclusive with Stop.
func (s *Server) Halt() {
	s.stopOnce.Do(func() {
		_ = s.http.Close()
		<-s.httpDone
		s.stopMembership()
		s.stopNodes(false)
		s.closeResources()
	})
}

func (s *Server) stopMembership() {
	_ = s.status.Unsubscribe()
	s.stopMembers()
}

func (s *Server) closeResources() {
	close(s.firstStop)
	<-s.firstDone
	_ = s.bus.Close()
	if err := s.closeStorage(); err != nil {
		s.log.Warn("closing raft storage", "err", err)
	}
	_ = s.unlock()
}
