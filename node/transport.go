package node

import (
	"github.com/raftbus/raftbus/internal/nodehook"
	"github.com/raftbus/raftbus/raftbridge"
)

// The transport is a raftbridge.Bridge over Config.Bus. internal/nodehook
// lets the benchmarks replace it (etcd's rafthttp, for a side-by-side
// comparison) without a hook in the public API.
func init() {
	nodehook.SetTransport = func(cfg any, f nodehook.Factory) {
		cfg.(*Config).newTransport = f
	}
}

// hookPeer is the node as a nodehook.Peer: the calls rafthttp makes beyond
// raftbridge.Raft.
type hookPeer struct{ *Node }

// IsIDRemoved reports whether a Raft ID was removed from the cluster.
func (p hookPeer) IsIDRemoved(id uint64) bool { return p.members.RemovedID(id) }

// Directory returns the replicated membership as a raftbridge.Directory.
func (p hookPeer) Directory() raftbridge.Directory { return p.members }

func (n *Node) newBridge() (nodehook.Transport, error) {
	cfg := raftbridge.Config{
		Cluster:     n.cfg.Cluster,
		ID:          n.cfg.ID,
		Incarnation: n.cfg.Incarnation,
		Group:       n.cfg.Group,
		Bus:         n.cfg.Bus,
		Directory:   n.members,
		Raft:        n,
		Logger:      n.cfg.Logger,
		Registerer:  n.cfg.Registerer,
	}
	if h := n.cfg.Host; h != nil {
		cfg.Bus = nil
		return h.cfg.Bridge.NewBridge(cfg) // labels the metrics with the group
	}
	return raftbridge.New(cfg)
}

// TransportStats returns the bridge's counters (messages and bytes per peer,
// drops by reason, snapshot transfers), or zero Stats when the node runs on
// another transport.
func (n *Node) TransportStats() raftbridge.Stats {
	if b, ok := n.transport.(*raftbridge.Bridge); ok {
		return b.Stats()
	}
	return raftbridge.Stats{}
}
