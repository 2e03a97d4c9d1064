// Package nodehook lets the benchmarks run the reference node over another
// transport (etcd's rafthttp) for a side-by-side comparison. It is not part
// of raftbus's API: a node's transport is always a raftbridge.Bridge over
// node.Config.Bus, and nothing but bench (a nested module, which may import
// this package because its import path lies under this module's) replaces
// it.
package nodehook

import (
	"go.etcd.io/raft/v3/raftpb"

	"github.com/raftbus/raftbus/raftbridge"
)

// Transport carries a node's Raft messages.
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

// Factory builds a node's transport; node.New calls it once, before the
// node's Raft starts.
type Factory func(Peer) (Transport, error)

// SetTransport makes the node built from cfg, which must be a
// *node.Config, use the transport f builds instead of a bridge over
// cfg.Bus (then Bus may be nil). Package node installs it when it is
// initialised, so it is set in any program that imports node.
var SetTransport func(cfg any, f Factory)
