package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// StatusSubject is where every running node answers status queries (core
// NATS request/reply; nothing is stored).
func StatusSubject(prefix string, cluster uuid.UUID) string {
	return prefix + "." + cluster.String() + ".status"
}

// NodeStatus is a running node's answer to a status query.
type NodeStatus struct {
	RaftID      HexID     `json:"raft_id"`
	Incarnation uuid.UUID `json:"incarnation"`
	Name        string    `json:"name"`
	Leader      HexID     `json:"leader"`
	State       string    `json:"state"`
	Term        uint64    `json:"term"`
	Applied     uint64    `json:"applied_index"`
	ClientURL   string    `json:"client_url,omitempty"`
	Problem     string    `json:"membership_problem,omitempty"`

	// The fields below were added for 'raftbus endpoint status'; a node
	// that predates them leaves them empty, and readers must treat an
	// empty field as "not reported", never as zero.

	// Commit is the node's Raft commit index.
	Commit uint64 `json:"commit_index,omitempty"`
	// Voters and Learners are the Raft IDs of the membership this node
	// applied: what a reader needs to judge quorum.
	Voters   []HexID `json:"voters,omitempty"`
	Learners []HexID `json:"learners,omitempty"`
	// Version is the node's software version; Revision its VCS commit.
	Version  string `json:"version,omitempty"`
	Revision string `json:"revision,omitempty"`
	// StorageBytes is the size of the node's Raft storage on disk.
	StorageBytes int64 `json:"storage_bytes,omitempty"`
	// SnapshotIndex is the index of the node's latest snapshot.
	SnapshotIndex uint64 `json:"snapshot_index,omitempty"`
	// Dropped counts the transport's drops by reason.
	Dropped map[string]uint64 `json:"transport_dropped"`
	// PeerRTT is the round-trip time to each peer, in seconds, by the
	// peer's hex Raft ID.
	PeerRTT map[string]float64 `json:"peer_rtt_seconds,omitempty"`
	// Groups reports the node's Raft groups other than 0, by group; the
	// fields above (Raft ID, leader, indexes, problem) are group 0's. A
	// node that predates groups, or runs only group 0, leaves it out.
	Groups map[uint64]GroupStatus `json:"groups,omitempty"`
}

// GroupStatus is a node's state in one Raft group other than 0: the
// fields of NodeStatus that are per group.
type GroupStatus struct {
	RaftID  HexID  `json:"raft_id"`
	Leader  HexID  `json:"leader"`
	State   string `json:"state,omitempty"`
	Term    uint64 `json:"term,omitempty"`
	Applied uint64 `json:"applied_index,omitempty"`
	Commit  uint64 `json:"commit_index,omitempty"`
	Problem string `json:"membership_problem,omitempty"`
}

// InGroup returns st as the node's status in group g: for g > 0 the Raft
// ID, leader, indexes and problem of that group (the rest is the host's),
// and false if the node reports no such group.
func (st NodeStatus) InGroup(g uint64) (NodeStatus, bool) {
	if g == 0 {
		return st, true
	}
	gs, ok := st.Groups[g]
	if !ok {
		return NodeStatus{}, false
	}
	st.RaftID, st.Leader, st.State, st.Term, st.Applied, st.Commit, st.Problem = gs.RaftID, gs.Leader, gs.State, gs.Term, gs.Applied, gs.Commit, gs.Problem
	st.Voters, st.Learners, st.SnapshotIndex = nil, nil, 0
	return st, true
}

// ServeStatus answers status queries with fn's result until the returned
// subscription is unsubscribed.
func ServeStatus(nc *nats.Conn, prefix string, cluster uuid.UUID, fn func() NodeStatus) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(StatusSubject(prefix, cluster), func(m *nats.Msg) {
		data, err := json.Marshal(fn())
		if err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("membership: serve status: %w", err)
	}
	return sub, nil
}

// QueryStatus asks every running node of the cluster for its status and
// collects the answers that arrive within wait.
func QueryStatus(ctx context.Context, nc *nats.Conn, prefix string, cluster uuid.UUID, wait time.Duration) ([]NodeStatus, error) {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("membership: status query: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(StatusSubject(prefix, cluster), inbox, nil); err != nil {
		return nil, fmt.Errorf("membership: status query: %w", err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []NodeStatus
	for {
		select {
		case m := <-ch:
			var st NodeStatus
			if json.Unmarshal(m.Data, &st) == nil {
				out = append(out, st)
			}
		case <-timer.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}
