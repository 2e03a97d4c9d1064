package server

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// MaxGroups bounds Config.Groups.
const MaxGroups = kv.MaxShards

// group is one Raft group of the server: its storage, state machine, node
// and membership manager. Group 0 is also Server.store, kv, node and
// members, which is all a single-group server has.
type group struct {
	id      uint64
	store   *raftstore.Store
	kv      *kv.Store
	node    *node.Node
	members *membership.Manager
}

// multi reports whether the server runs more than one group.
func (s *Server) multi() bool { return s.cfg.Groups > 1 }

// openStorage opens the Raft storage: one store for one group, else one
// Pebble for all groups (raftstore.Host), one store per group in it.
func (s *Server) openStorage() error {
	opts := raftstore.Options{Logger: s.log, NoSync: s.cfg.NoSync, Registerer: s.registry}
	dir := datadir.RaftDir(s.cfg.DataDir)
	if !s.multi() {
		st, err := raftstore.Open(dir, opts)
		if err != nil {
			return err
		}
		s.store = st
		s.groups = []*group{{store: st}}
		return nil
	}
	h, err := raftstore.OpenHost(dir, opts)
	if err != nil {
		return err
	}
	s.rhost = h
	for g := range uint64(s.cfg.Groups) {
		st, err := h.Group(g)
		if err != nil {
			return err
		}
		s.groups = append(s.groups, &group{id: g, store: st})
	}
	s.store = s.groups[0].store
	return nil
}

// closeStorage closes what openStorage opened.
func (s *Server) closeStorage() error {
	if s.rhost != nil {
		return s.rhost.Close()
	}
	return s.store.Close()
}

// checkGroups refuses a data directory whose groups do not match
// Config.Groups: the shard count is fixed when a cluster is created
// (kv.ShardOf), and a group that lost its log after the first start is a
// lost log like any other (checkRaftState checked group 0).
func (s *Server) checkGroups(firstStart bool) error {
	stored, err := s.store.StoredGroups()
	if err != nil {
		return fmt.Errorf("server: list the Raft groups of %s: %w", s.cfg.DataDir, err)
	}
	if len(stored) > 0 {
		if n := slices.Max(stored) + 1; n > uint64(s.cfg.Groups) {
			return fmt.Errorf("server: %s holds %d Raft groups, but the node was started with %d: a cluster keeps the group count it was created with (start it with --groups %d)",
				s.identity, n, s.cfg.Groups, n)
		}
	}
	if firstStart {
		return nil // a first start that failed half-way bootstraps every group again
	}
	for _, gr := range s.groups[1:] {
		empty, err := storageEmpty(gr.store)
		if err != nil {
			return fmt.Errorf("server: read Raft state of group %d: %w", gr.id, err)
		}
		if empty {
			return fmt.Errorf("%w: %s: group %d has no Raft state although the node started before (with %d groups?): its log was lost, or the node was created with fewer groups",
				ErrLostLog, s.identity, gr.id, s.cfg.Groups)
		}
	}
	return nil
}

// anyGroupEmpty reports whether some group's Raft state is still empty.
func (s *Server) anyGroupEmpty() (bool, error) {
	for _, gr := range s.groups {
		empty, err := storageEmpty(gr.store)
		if err != nil || empty {
			return empty, err
		}
	}
	return false, nil
}

// startHosts creates the hosts that carry many groups over one bus and one
// tick (nothing for a single group).
func (s *Server) startHosts(nc node.Config) error {
	if !s.multi() {
		return nil
	}
	var err error
	s.bhost, err = raftbridge.NewHost(raftbridge.HostConfig{Cluster: s.identity.ClusterID, Incarnation: s.identity.Incarnation,
		Bus: s.bus, Logger: s.log, Registerer: s.registry})
	if err != nil {
		return err
	}
	s.nhost, err = node.NewHost(node.HostConfig{Bridge: s.bhost, TickInterval: nc.TickInterval, ElectionTicks: nc.ElectionTicks, Logger: s.log})
	return err
}

// startNodes starts every group's node from the shared node config.
func (s *Server) startNodes(nc node.Config) error {
	for _, gr := range s.groups {
		c := nc
		gr.kv = kv.NewStore()
		c.Group, c.Storage, c.StateMachine = gr.id, gr.store, gr.kv
		if s.multi() {
			c.Host, c.Bus = s.nhost, nil
		}
		if s.cfg.Joining && len(c.JoinMembers) == 0 {
			// The bridge admits only members: a joining node learns the
			// current ones from the verified records of its group.
			c.JoinMembers = s.joinMembers(s.identity.ClusterID, gr.id)
		}
		n, err := node.New(c)
		if err != nil {
			return fmt.Errorf("server: group %d: %w", gr.id, err)
		}
		gr.node = n
	}
	s.node, s.kv = s.groups[0].node, s.groups[0].kv
	if s.bhost != nil {
		// Only now: envelopes of a group without a bridge would be dropped.
		return s.bhost.Start()
	}
	return nil
}

// shards is the kv handler's view of the groups.
func (s *Server) shards() []kv.Shard {
	out := make([]kv.Shard, len(s.groups))
	for i, gr := range s.groups {
		out[i] = kv.Shard{Store: gr.kv, Cluster: gr.node}
	}
	return out
}

// eachNode runs f on every group's node at once and waits: a leader's Stop
// hands leadership over, which may take seconds per group.
func (s *Server) eachNode(f func(*node.Node)) {
	var wg sync.WaitGroup
	for _, gr := range s.groups {
		if gr.node == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(gr.node)
		}()
	}
	wg.Wait()
}

// stopNodes stops every node, then the hosts.
func (s *Server) stopNodes(graceful bool) {
	s.eachNode(func(n *node.Node) {
		if graceful {
			n.Stop()
		} else {
			n.Halt()
		}
	})
	if s.nhost != nil {
		s.nhost.Close()
	}
	if s.bhost != nil {
		_ = s.bhost.Close()
	}
}

// watchNodes closes done once every group's node has stopped, by itself
// (removed from its group, storage failure) or by Stop: a host removed
// from some groups goes on serving the others.
func (s *Server) watchNodes() {
	defer close(s.done)
	for _, gr := range s.groups {
		<-gr.node.Done()
	}
}

// stopMembers stops every group's membership manager.
func (s *Server) stopMembers() {
	for _, gr := range s.groups {
		if gr.members != nil {
			gr.members.Stop()
		}
	}
}

// groupsErr is the first error a group's node stopped with, if any.
func (s *Server) groupsErr() error {
	var errs []error
	for _, gr := range s.groups {
		if err := gr.node.Err(); err != nil && !errors.Is(err, node.ErrRemoved) {
			errs = append(errs, fmt.Errorf("group %d: %w", gr.id, err))
		}
	}
	return errors.Join(errs...)
}
