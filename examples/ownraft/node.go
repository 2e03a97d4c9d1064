package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// snapshotEvery is how many applied entries a node lets pass before it
// takes a snapshot and compacts its log; small, so that the example shows
// snapshots (and the directory image they carry) at work.
const snapshotEvery = 8

// raftNode adapts a raft.Node to raftbridge.Raft. ReportUnreachable and
// ReportSnapshot already have the right signatures; a raft.Node has Step,
// not Process.
type raftNode struct{ raft.Node }

// Process steps a message the bridge validated. raft v3.7 takes the
// message by pointer: the bridge hands over a message it decoded for this
// call alone, never a copy of another.
func (n raftNode) Process(ctx context.Context, m *raftpb.Message) error { return n.Step(ctx, m) }

// node is one member: its data directory, durable Raft storage, the
// directory of members, a bridge on a bus, a raft.Node and its Ready loop,
// and the replicated state (a map).
type node struct {
	id     *datadir.Identity
	unlock func() error
	store  *raftstore.Store
	dir    *raftbridge.MemDirectory
	raft   raft.Node
	bridge *raftbridge.Bridge
	bus    bus.Bus
	log    *slog.Logger
	stopc  chan struct{}
	done   chan struct{}

	mu        sync.Mutex // guards kv, appliedTo and confState
	kv        map[string]string
	appliedTo uint64
	confState *raftpb.ConfState
	snapIndex uint64 // owned by the Ready loop
}

// snapshotData is what a snapshot holds: the application's state and the
// directory image, so that a node restored from it keeps every tombstone.
type snapshotData struct {
	KV        map[string]string `json:"kv"`
	Directory json.RawMessage   `json:"directory"`
}

// nodeConfig is what startNode needs.
type nodeConfig struct {
	Dir     string // the data directory, created by openIdentity
	Bus     bus.Bus
	Peers   []raftbridge.Member // bootstrap only: the founding members, self included
	Members []byte              // join only: the directory image of the cluster (from a member)
	Logger  *slog.Logger
}

// startNode opens the node's Raft storage and starts its Raft node, bridge
// and Ready loop: a bootstrap (cfg.Peers), a join (cfg.Members, Raft with
// no peers: the leader sends it the log) or a restart (storage not empty).
func startNode(id *datadir.Identity, unlock func() error, cfg nodeConfig) (*node, error) {
	store, err := raftstore.Open(datadir.RaftDir(cfg.Dir), raftstore.Options{NoSync: true}) // NoSync: an example, not production
	if err != nil {
		return nil, err
	}
	n := &node{id: id, unlock: unlock, store: store, dir: raftbridge.NewMemDirectory(), bus: cfg.Bus, log: cfg.Logger,
		stopc: make(chan struct{}), done: make(chan struct{}), kv: map[string]string{}}
	fail := func(err error) (*node, error) {
		_ = store.Close()
		return nil, err
	}

	// Restore what the last snapshot holds before Raft starts: the state and
	// the directory, tombstones included.
	snap, err := store.Snapshot()
	if err != nil {
		return fail(err)
	}
	if !raft.IsEmptySnap(snap) {
		if err := n.restore(snap); err != nil {
			return fail(err)
		}
	}
	hs, _, err := store.InitialState()
	if err != nil {
		return fail(err)
	}
	restart := !raft.IsEmptyHardState(hs) || !raft.IsEmptySnap(snap)

	rc := &raft.Config{
		ID: id.RaftID, ElectionTick: 10, HeartbeatTick: 1, Storage: store,
		Applied:       snap.GetMetadata().GetIndex(), // entries after it are applied again: apply is idempotent
		MaxSizePerMsg: 256 << 10, MaxInflightMsgs: 64,
		CheckQuorum: true, PreVote: true, StepDownOnRemoval: true,
		Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	}
	var peers []raft.Peer
	switch {
	case restart:
	case len(cfg.Peers) > 0:
		// The founding members go into the directory before Raft starts: the
		// bridge drops everything from senders it does not know. raft.StartNode
		// commits the same changes at indexes 1..n; applying them again is a
		// no-op.
		for _, m := range cfg.Peers {
			ctx, err := raftbridge.EncodeConfContext(m)
			if err != nil {
				return fail(err)
			}
			peers = append(peers, raft.Peer{ID: uint64(m.ID), Context: ctx})
			cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(uint64(m.ID)), Context: ctx}
			if _, err := raftbridge.ApplyConfChange(n.dir, cc); err != nil {
				return fail(err)
			}
		}
	case cfg.Members != nil:
		// A joiner knows the members from the cluster (in raftbus, from the
		// verified membership records) before its Raft starts.
		if err := n.dir.Restore(cfg.Members); err != nil {
			return fail(err)
		}
	default:
		return fail(errors.New("a new node needs founding peers or the members it joins"))
	}

	if len(peers) > 0 {
		n.raft = raft.StartNode(rc, peers)
	} else {
		n.raft = raft.RestartNode(rc) // a restart, or a join: the leader sends the log
	}
	n.bridge, err = raftbridge.New(raftbridge.Config{
		Cluster: id.ClusterID, ID: id.RaftID, Incarnation: id.Incarnation,
		Bus: cfg.Bus, Directory: n.dir, Raft: raftNode{n.raft}, Logger: cfg.Logger,
	})
	if err == nil {
		err = n.bridge.Start()
	}
	if err != nil {
		n.raft.Stop()
		return fail(err)
	}
	go n.run()
	return n, nil
}

// run is the Ready loop, the only goroutine that writes storage, state
// and directory.
func (n *node) run() {
	defer close(n.done)
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-ticker.C:
			n.raft.Tick()
		case rd := <-n.raft.Ready():
			if err := n.handle(rd); err != nil {
				n.log.Error("ready loop stopped", "err", err)
				return
			}
		}
	}
}

// handle takes one Ready through the order raft requires.
func (n *node) handle(rd raft.Ready) error {
	// 1. Persist a received snapshot, the hard state and the entries.
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.store.ApplySnapshot(rd.Snapshot); err != nil {
			return err
		}
		if err := n.restore(rd.Snapshot); err != nil {
			return err
		}
	}
	if err := n.store.Save(rd.HardState, rd.Entries); err != nil {
		return err
	}
	// 2. Send, only now that what the messages announce is durable.
	n.bridge.Send(rd.Messages)
	// 3. Apply; ConfChanges feed the directory, then raft.
	for _, e := range rd.CommittedEntries {
		if err := n.apply(e); err != nil {
			return err
		}
	}
	if err := n.maybeSnapshot(); err != nil {
		return err
	}
	n.raft.Advance()
	return nil
}

// apply applies one committed entry.
func (n *node) apply(e *raftpb.Entry) error {
	var cc raftpb.ConfChangeI
	switch e.GetType() {
	case raftpb.EntryNormal:
		if k, v, ok := strings.Cut(string(e.GetData()), "="); ok {
			n.mu.Lock()
			n.kv[k] = v
			n.mu.Unlock()
		}
	case raftpb.EntryConfChange:
		v1 := new(raftpb.ConfChange)
		if err := proto.Unmarshal(e.GetData(), v1); err != nil {
			return err
		}
		cc = v1
	case raftpb.EntryConfChangeV2:
		v2 := new(raftpb.ConfChangeV2)
		if err := proto.Unmarshal(e.GetData(), v2); err != nil {
			return err
		}
		cc = v2
	}
	var cs *raftpb.ConfState
	if cc != nil {
		// The directory decides first; raft applies what it accepted (or a
		// no-op), so both agree on every node.
		accepted, err := raftbridge.ApplyConfChange(n.dir, cc)
		if err != nil {
			n.log.Warn("membership change refused", "index", e.GetIndex(), "err", err)
		}
		cs = n.raft.ApplyConfChange(accepted)
	}
	n.mu.Lock()
	n.appliedTo = e.GetIndex()
	if cs != nil {
		n.confState = cs
	}
	n.mu.Unlock()
	return nil
}

// maybeSnapshot takes a snapshot, with the directory image, every
// snapshotEvery applied entries and compacts the log behind it.
func (n *node) maybeSnapshot() error {
	n.mu.Lock()
	applied, cs := n.appliedTo, n.confState
	if applied < n.snapIndex+snapshotEvery || cs == nil {
		n.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(snapshotData{KV: n.kv, Directory: n.dir.Save()})
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := n.store.CreateSnapshot(applied, cs, data); err != nil {
		return err
	}
	n.snapIndex = applied
	return n.store.Compact(applied)
}

// restore replaces the state and the directory with a snapshot's.
func (n *node) restore(snap *raftpb.Snapshot) error {
	var sd snapshotData
	if err := json.Unmarshal(snap.GetData(), &sd); err != nil {
		return fmt.Errorf("snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	if err := n.dir.Restore(sd.Directory); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.kv = sd.KV
	if n.kv == nil {
		n.kv = map[string]string{}
	}
	n.appliedTo = snap.GetMetadata().GetIndex()
	n.confState = snap.GetMetadata().GetConfState()
	n.snapIndex = n.appliedTo
	return nil
}

// get reads the local state.
func (n *node) get(k string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kv[k]
}

// addMember proposes adding m as a voter; the change takes effect on each
// node when it is applied.
func (n *node) addMember(ctx context.Context, m raftbridge.Member) error {
	c, err := raftbridge.EncodeConfContext(m)
	if err != nil {
		return err
	}
	return n.raft.ProposeConfChange(ctx, &raftpb.ConfChange{
		Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(uint64(m.ID)), Context: c})
}

// removeMember proposes removing id; applying it tombstones the Raft ID and
// its incarnation in every directory, forever.
func (n *node) removeMember(ctx context.Context, id uint64) error {
	return n.raft.ProposeConfChange(ctx, &raftpb.ConfChange{
		Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(id)})
}

// member is this node as the directory and a ConfChange context name it.
func (n *node) member() raftbridge.Member {
	return raftbridge.Member{ID: raftbridge.ID(n.id.RaftID), Incarnation: n.id.Incarnation, PublicKey: n.id.PublicKey, Name: n.id.Name}
}

// stop shuts the node down in the order the bridge requires: bridge, then
// Raft, then the bus; the storage and the directory lock last.
func (n *node) stop() {
	close(n.stopc)
	<-n.done
	_ = n.bridge.Close()
	n.raft.Stop()
	_ = n.bus.Close()
	_ = n.store.Close()
	_ = n.unlock()
}

// openIdentity locks a data directory and loads its identity, creating one
// (a new incarnation and nkey) on first use.
func openIdentity(dir string, cluster uuid.UUID, raftID uint64, name string) (*datadir.Identity, func() error, error) {
	unlock, err := datadir.Lock(dir)
	if err != nil {
		return nil, nil, err
	}
	id, err := datadir.Load(dir)
	if errors.Is(err, datadir.ErrNoIdentity) {
		id, err = datadir.Create(dir, datadir.Identity{ClusterID: cluster, RaftID: raftID, Name: name})
	}
	if err == nil {
		err = id.Check(datadir.Expect{ClusterID: cluster, RaftID: raftID})
	}
	if err != nil {
		_ = unlock()
		return nil, nil, err
	}
	return id, unlock, nil
}
