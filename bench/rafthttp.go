package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	stats "go.etcd.io/etcd/server/v3/etcdserver/api/v2stats"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/raftbus/raftbus/internal/nodehook"
)

// httpTransport runs a node over etcd's rafthttp, wired the way
// contrib/raftexample and etcdserver wire it: one rafthttp.Transport whose
// Raft is the node, a peer per other member, and its Handler served on the
// node's own peer listener.
type httpTransport struct {
	tr    *rafthttp.Transport
	ln    net.Listener
	peers map[uint64]string // Raft ID -> peer URL, this node excluded
	log   *slog.Logger

	started   bool
	srv       *http.Server
	served    chan struct{}
	stopErrs  chan struct{}
	closeOnce sync.Once
}

var _ nodehook.Transport = (*httpTransport)(nil)

// newHTTPTransport returns the rafthttp transport of node id. ln is the
// listener its peers were told about; peers maps every other member to its
// URL. The node's Peer implements rafthttp.Raft as it is (Process,
// IsIDRemoved, ReportUnreachable, ReportSnapshot).
func newHTTPTransport(p nodehook.Peer, id, cluster uint64, ln net.Listener, peers map[uint64]string, zl *zap.Logger, log *slog.Logger) *httpTransport {
	local := types.ID(id)
	return &httpTransport{
		tr: &rafthttp.Transport{
			Logger:      zl,
			ID:          local,
			ClusterID:   types.ID(cluster),
			Raft:        p,
			ServerStats: stats.NewServerStats("", local.String()),
			LeaderStats: stats.NewLeaderStats(zl, local.String()),
			ErrorC:      make(chan error, 1),
		},
		ln:       ln,
		peers:    peers,
		log:      log,
		served:   make(chan struct{}),
		stopErrs: make(chan struct{}),
	}
}

// Start implements nodehook.Transport.
func (t *httpTransport) Start() error {
	if err := t.tr.Start(); err != nil {
		return fmt.Errorf("rafthttp: start: %w", err)
	}
	t.started = true
	for id, url := range t.peers {
		t.tr.AddPeer(types.ID(id), []string{url})
	}
	t.srv = &http.Server{Handler: t.tr.Handler()}
	go func() {
		defer close(t.served)
		if err := t.srv.Serve(t.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.log.Error("rafthttp listener failed", "err", err)
		}
	}()
	go func() {
		select {
		case err := <-t.tr.ErrorC:
			t.log.Error("rafthttp reported a critical error", "err", err)
		case <-t.stopErrs:
		}
	}()
	return nil
}

// Send implements nodehook.Transport. rafthttp v3.7 takes the message pointers
// and queues them per peer without copying; it never blocks (a full peer
// buffer drops the message and reports the peer unreachable).
func (t *httpTransport) Send(msgs []*raftpb.Message) { t.tr.Send(msgs) }

// Close implements nodehook.Transport.
func (t *httpTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.stopErrs)
		if t.srv != nil {
			_ = t.srv.Close()
			<-t.served
		} else {
			_ = t.ln.Close()
		}
		if t.started {
			t.tr.Stop()
		}
	})
	return nil
}
