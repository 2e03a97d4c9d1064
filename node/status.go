package node

import (
	"github.com/google/uuid"

	"github.com/raftbus/raftbus/raftbridge"
)

// Status is a point-in-time view of a node, served on GET /status.
type Status struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Incarnation uuid.UUID `json:"incarnation"`
	Cluster     uuid.UUID `json:"cluster"`
	State       string    `json:"state"`
	Term        uint64    `json:"term"`
	Leader      string    `json:"leader"`
	Commit      uint64    `json:"commit_index"`
	Applied     uint64    `json:"applied_index"`
	// MembershipVersion is the index of the last membership change that
	// took effect: the version `member list` shows and requests name.
	MembershipVersion uint64            `json:"membership_version"`
	Members           []Member          `json:"members"`
	RemovedIDs        []string          `json:"removed_ids,omitempty"`
	Bus               string            `json:"bus,omitempty"`
	Dropped           map[string]uint64 `json:"transport_dropped"`
	Stopped           bool              `json:"stopped,omitempty"`
	Removed           bool              `json:"removed,omitempty"`
}

// Status returns the node's current status.
func (n *Node) Status() Status {
	rs := n.raft.Status()
	img := n.members.image()
	st := Status{
		ID:                raftbridge.ID(n.cfg.ID).String(),
		Name:              n.cfg.Name,
		Incarnation:       n.cfg.Incarnation,
		Cluster:           n.cfg.Cluster,
		State:             rs.RaftState.String(),
		Term:              rs.GetTerm(),
		Leader:            raftbridge.ID(rs.Lead).String(),
		Commit:            rs.GetCommit(),
		Applied:           n.applied.current(),
		MembershipVersion: img.Effective,
		Members:           img.Members,
		RemovedIDs:        img.RemovedIDs,
		Dropped:           map[string]uint64{},
		Removed:           n.removed.Load(),
	}
	if n.cfg.Bus != nil {
		st.Bus = n.cfg.Bus.State().String()
	}
	for reason, c := range n.TransportStats().Dropped {
		st.Dropped[string(reason)] = c
	}
	select {
	case <-n.done:
		st.Stopped = true
	default:
	}
	return st
}

// Members returns the current members, sorted by Raft ID.
func (n *Node) Members() []Member { return n.members.list() }

// Leader returns the Raft ID of the leader this node knows, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// ID returns this node's Raft ID.
func (n *Node) ID() uint64 { return n.cfg.ID }

// AppliedIndex returns the index of the last entry applied here.
func (n *Node) AppliedIndex() uint64 { return n.applied.current() }

// FirstIndex returns the first log index still held by storage: entries
// before it were compacted into a snapshot.
func (n *Node) FirstIndex() (uint64, error) { return n.cfg.Storage.FirstIndex() }
