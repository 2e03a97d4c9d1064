package node

import (
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/raftbridge"
)

// Transport carries a node's Raft messages. The default, built when
// Config.NewTransport is nil, is a raftbridge.Bridge over Config.Bus; the
// hook exists so that benchmarks can run the very same node over another
// transport (etcd's rafthttp) for a side-by-side comparison.
type Transport interface {
	// Send is called from the Ready loop with the messages of one Ready,
	// after the state they depend on is durable. It must not block.
	Send(msgs []*raftpb.Message)
	// Start begins delivering inbound messages to the node.
	Start() error
	// Close stops the transport and waits for its goroutines.
	Close() error
}

// Peer is what a Transport delivers to: the node, seen through etcd
// rafthttp's Raft interface (Process, IsIDRemoved, ReportUnreachable,
// ReportSnapshot), plus the membership directory.
type Peer interface {
	raftbridge.Raft
	IsIDRemoved(id uint64) bool
	Directory() raftbridge.Directory
}

// IsIDRemoved reports whether a Raft ID was removed from the cluster.
func (n *Node) IsIDRemoved(id uint64) bool { return n.members.RemovedID(id) }

// Directory returns the replicated membership as a raftbridge.Directory.
func (n *Node) Directory() raftbridge.Directory { return n.members }

func (n *Node) newBridge() (Transport, error) {
	return raftbridge.New(raftbridge.Config{
		Cluster:     n.cfg.Cluster,
		ID:          n.cfg.ID,
		Incarnation: n.cfg.Incarnation,
		Bus:         n.cfg.Bus,
		Directory:   n.members,
		Raft:        n,
		Logger:      n.cfg.Logger,
		Registerer:  n.cfg.Registerer,
	})
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
