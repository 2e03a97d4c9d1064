package main

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/datadir"
)

// transport gives each node a bus.
type transport interface {
	// admit lets an incarnation onto the network (a NATS user of its own).
	admit(id *datadir.Identity) error
	// expel removes an incarnation's access to the network: after its
	// removal, defence in depth beside the tombstones.
	expel(inc uuid.UUID) error
	// newBus returns a bus for the incarnation of the data directory dir.
	newBus(id *datadir.Identity, dir string) (bus.Bus, error)
	close()
}

// natsTransport is an embedded NATS server on which every incarnation is a
// user of its own, authenticated by the incarnation's nkey and allowed to
// publish only with itself as the source token and to subscribe only to
// its own subjects: what `raftbus nats-config` generates for the transport
// part (see SECURITY.md).
type natsTransport struct {
	cluster uuid.UUID
	log     *slog.Logger

	mu   sync.Mutex // guards opts
	srv  *natsserver.Server
	opts *natsserver.Options
}

// startNATS starts the server with the given incarnations as its users.
func startNATS(cluster uuid.UUID, ids []*datadir.Identity, log *slog.Logger) (*natsTransport, error) {
	t := &natsTransport{cluster: cluster, log: log}
	t.opts = &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	for _, id := range ids {
		t.opts.Nkeys = append(t.opts.Nkeys, t.user(id))
	}
	srv, err := natsserver.NewServer(t.opts.Clone())
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS server not ready within 10s")
	}
	t.srv = srv
	return t, nil
}

// user is an incarnation's NATS user: transport subjects only.
func (t *natsTransport) user(id *datadir.Identity) *natsserver.NkeyUser {
	pc := bus.DefaultPrefix + "." + t.cluster.String()
	return &natsserver.NkeyUser{Nkey: id.PublicKey, Permissions: &natsserver.Permissions{
		Publish:   &natsserver.SubjectPermission{Allow: []string{pc + ".*." + id.Incarnation.String() + ".>"}},
		Subscribe: &natsserver.SubjectPermission{Allow: []string{t.inbox(id.Incarnation)}},
	}}
}

// inbox is the only subject an incarnation may subscribe to.
func (t *natsTransport) inbox(inc uuid.UUID) string {
	return bus.DefaultPrefix + "." + t.cluster.String() + "." + inc.String() + ".>"
}

func (t *natsTransport) admit(id *datadir.Identity) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opts.Nkeys = append(t.opts.Nkeys, t.user(id))
	return t.srv.ReloadOptions(t.opts.Clone())
}

func (t *natsTransport) expel(inc uuid.UUID) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	users := t.opts.Nkeys[:0:0]
	for _, u := range t.opts.Nkeys {
		if u.Permissions.Subscribe.Allow[0] != t.inbox(inc) {
			users = append(users, u)
		}
	}
	t.opts.Nkeys = users
	return t.srv.ReloadOptions(t.opts.Clone())
}

func (t *natsTransport) newBus(id *datadir.Identity, dir string) (bus.Bus, error) {
	kp, err := datadir.LoadKey(dir)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(t.srv.ClientURL(), nats.Name(id.Name), nats.Nkey(id.PublicKey, kp.Sign),
		nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", id.Name, err)
	}
	b, err := natsbus.New(natsbus.Config{Conn: nc, Cluster: id.ClusterID, Self: id.Incarnation, Logger: t.log})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return connBus{b, nc}, nil
}

// connBus is a NATS bus that owns its connection: natsbus leaves the
// connection open on Close, since it may be shared.
type connBus struct {
	*natsbus.Bus
	nc *nats.Conn
}

func (b connBus) Close() error {
	err := b.Bus.Close()
	b.nc.Close()
	return err
}

func (t *natsTransport) close() {
	t.srv.Shutdown()
	t.srv.WaitForShutdown()
}

// memTransport is the in-memory network of package membus: the same
// subjects and queueing as NATS, plus fault injection (drop, duplicate,
// reorder, delay, partition, manual delivery) for tests.
type memTransport struct{ net *membus.Network }

func (t memTransport) admit(*datadir.Identity) error { return nil }

func (t memTransport) expel(uuid.UUID) error { return nil }

func (t memTransport) newBus(id *datadir.Identity, _ string) (bus.Bus, error) {
	return t.net.NewBus(membus.Config{Cluster: id.ClusterID, Self: id.Incarnation})
}

func (t memTransport) close() { t.net.Close() }
