package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/node"
)

// DefaultReadyTimeout is the default Config.ReadyTimeout.
const DefaultReadyTimeout = 2 * time.Second

// probeFile is written and removed by every /healthz in the data
// directory, to prove it writable.
const probeFile = ".healthz-probe"

// healthz is GET /healthz, the liveness probe: the node runs (it has not
// stopped itself because its storage failed or it was removed) and its data
// directory takes a write. It does not need a leader: a partitioned node is
// alive, and restarting it would not help.
func (s *Server) healthz(ctx context.Context) error {
	if !s.multi() {
		if err := s.node.Err(); err != nil {
			return fmt.Errorf("node stopped: %w", err)
		}
	} else if err := s.groupsErr(); err != nil {
		// A node removed from some groups is healthy; one whose storage
		// failed is not (they share it, so every group then fails).
		return fmt.Errorf("node stopped: %w", err)
	}
	return s.probeStorage(ctx)
}

// probeStorage writes, syncs and removes a small file in the data
// directory. At most one probe write is in flight: on a hung disk the
// write never returns, and later probes must fail at once instead of
// piling up goroutines behind it.
func (s *Server) probeStorage(ctx context.Context) error {
	if !s.probeMu.TryLock() {
		return errors.New("storage not writable: the previous probe write has not finished")
	}
	done := make(chan error, 1)
	go func() {
		defer s.probeMu.Unlock()
		done <- writeProbe(filepath.Join(s.cfg.DataDir, probeFile))
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("storage not writable: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("storage not writable: the probe write did not finish: %w", ctx.Err())
	}
}

func writeProbe(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte("raftbus health probe\n"))
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(path)
	return errors.Join(werr, serr, cerr, rerr)
}

// readyz is GET /readyz, the readiness probe: the node knows a leader and
// has applied everything the cluster had committed when the probe began,
// within Config.ReadyTimeout (a linearizable read barrier). A node that
// fails it cannot serve linearizable reads or take writes promptly, so a
// load balancer should route around it.
func (s *Server) readyz(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	if !s.multi() {
		return s.groupReady(ctx, s.node)
	}
	// Every group this node still belongs to must be ready: a request for
	// any key may come. The barriers run at once, within one timeout.
	errs := make([]error, len(s.groups))
	var wg sync.WaitGroup
	for i, gr := range s.groups {
		if errors.Is(gr.node.Err(), node.ErrRemoved) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.groupReady(ctx, gr.node); err != nil {
				errs[i] = fmt.Errorf("group %d: %w", gr.id, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// groupReady is the readiness of one group's node.
func (s *Server) groupReady(ctx context.Context, n *node.Node) error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("node stopped: %w", err)
	}
	if n.Leader() == 0 {
		return errors.New("no leader")
	}
	if err := n.ReadIndex(ctx); err != nil {
		return fmt.Errorf("not caught up with the leader within %s: %w", s.cfg.ReadyTimeout, err)
	}
	return nil
}

// storageBytes is the size of the Raft storage directory (Pebble and the
// snapshot files). Files that vanish while it walks (compactions) are
// skipped.
func (s *Server) storageBytes() int64 {
	var n int64
	_ = filepath.WalkDir(datadir.RaftDir(s.cfg.DataDir), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// statusCache keeps the storage size for a second: status queries over
// NATS, /status and the gauge all want it, and walking the directory on
// each would let a flood of queries cost disk I/O.
type statusCache struct {
	mu    sync.Mutex
	at    time.Time
	bytes int64
}

func (s *Server) cachedStorageBytes() int64 {
	c := &s.sizeCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > time.Second {
		c.bytes, c.at = s.storageBytes(), time.Now()
	}
	return c.bytes
}

// storageCollector exports the storage size as
// raftbus_server_storage_size_bytes.
func (s *Server) storageCollector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "raftbus", Subsystem: "server", Name: "storage_size_bytes",
		Help: "Bytes of the Raft storage directory on disk (Pebble and snapshot files).",
	}, func() float64 { return float64(s.cachedStorageBytes()) })
}
