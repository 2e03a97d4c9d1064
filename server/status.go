package server

import (
	"maps"
	"time"

	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
)

// Status is the node's status plus what an operator checks first, served
// on GET /status.
type Status struct {
	node.Status
	// Version and Revision name the build (see Build).
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	// StorageBytes is the size of the Raft storage directory on disk.
	StorageBytes int64 `json:"storage_bytes"`
	// SnapshotIndex is the index of the latest local snapshot, 0 if none.
	SnapshotIndex uint64 `json:"snapshot_index"`
	// DroppedMessages and DroppedEnvelopes split transport_dropped by unit:
	// Raft messages, and whole payloads whose messages could not be
	// counted.
	DroppedMessages  map[string]uint64 `json:"transport_dropped_messages"`
	DroppedEnvelopes map[string]uint64 `json:"transport_dropped_envelopes"`
	// PeerRTT is the latest heartbeat round-trip time to each follower in
	// seconds, by hex Raft ID; only a leader measures it.
	PeerRTT map[string]float64 `json:"peer_rtt_seconds,omitempty"`
	// PeerLastHeard is how many seconds ago each peer was last heard from.
	PeerLastHeard     map[string]float64 `json:"peer_last_heard_seconds,omitempty"`
	MembershipProblem string             `json:"membership_problem,omitempty"`
	// MembershipRejected counts the committed membership records this
	// node skipped (unsigned, badly signed, unauthorised, malformed), by
	// reason.
	MembershipRejected map[string]int `json:"membership_rejected,omitempty"`
	// Groups is the number of Raft groups the node runs, with more than
	// one; the rest of the status is group 0's. Quiescent of them are
	// idle (no ticks, no heartbeats).
	Groups    int `json:"groups,omitempty"`
	Quiescent int `json:"groups_quiescent,omitempty"`
}

// Status returns the node's status.
func (s *Server) Status() Status {
	b := Build()
	ts := s.node.TransportStats()
	st := Status{
		Status: s.node.Status(), Version: b.Version, Revision: b.Revision,
		StorageBytes: s.cachedStorageBytes(), SnapshotIndex: s.store.SnapshotIndex(),
		DroppedMessages: map[string]uint64{}, DroppedEnvelopes: map[string]uint64{},
		MembershipProblem: s.members.Problem(), MembershipRejected: s.members.Rejected(),
	}
	if s.nhost != nil {
		hs := s.nhost.Stats()
		st.Groups, st.Quiescent = len(s.groups), hs.Quiescent
	}
	for r, n := range ts.DroppedMessages {
		st.DroppedMessages[string(r)] = n
	}
	for r, n := range ts.DroppedEnvelopes {
		st.DroppedEnvelopes[string(r)] = n
	}
	if len(ts.PeerRTT) > 0 {
		st.PeerRTT = make(map[string]float64, len(ts.PeerRTT))
		for id, d := range ts.PeerRTT {
			st.PeerRTT[raftbridge.ID(id).String()] = d.Seconds()
		}
	}
	if len(ts.LastHeard) > 0 {
		st.PeerLastHeard = make(map[string]float64, len(ts.LastHeard))
		for id, t := range ts.LastHeard {
			st.PeerLastHeard[raftbridge.ID(id).String()] = roundMillis(time.Since(t).Seconds())
		}
	}
	return st
}

// nodeStatus is the answer to a status query over NATS.
func (s *Server) nodeStatus() membership.NodeStatus {
	st := s.Status()
	ns := membership.NodeStatus{RaftID: membership.HexID(s.identity.RaftID), Incarnation: s.identity.Incarnation,
		Name: s.identity.Name, Leader: membership.HexID(s.node.Leader()), State: st.State, Term: st.Term,
		Applied: st.Applied, ClientURL: s.URL(), Problem: st.MembershipProblem,
		Commit: st.Commit, Dropped: maps.Clone(st.Dropped),
		Version: st.Version, Revision: st.Revision, StorageBytes: st.StorageBytes, SnapshotIndex: st.SnapshotIndex,
		PeerRTT: st.PeerRTT}
	for _, m := range st.Members {
		if m.Learner {
			ns.Learners = append(ns.Learners, membership.HexID(m.ID))
		} else {
			ns.Voters = append(ns.Voters, membership.HexID(m.ID))
		}
	}
	for _, gr := range s.groups[1:] {
		if ns.Groups == nil {
			ns.Groups = make(map[uint64]membership.GroupStatus, len(s.groups)-1)
		}
		gs := gr.node.Status()
		ns.Groups[gr.id] = membership.GroupStatus{RaftID: membership.HexID(gr.node.ID()), Leader: membership.HexID(gr.node.Leader()),
			State: gs.State, Term: gs.Term, Applied: gs.Applied, Commit: gs.Commit, Problem: gr.members.Problem()}
	}
	return ns
}

func roundMillis(s float64) float64 { return float64(int64(s*1000)) / 1000 }
