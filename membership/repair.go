package membership

import (
	"context"
	"fmt"
)

// repair binds the cluster to s, a stream other than the bound one (the
// bound one was lost, or deleted and recreated), when s holds an
// undecided repair request: only the admin can write requests, so the
// request is the operator's word that s is the stream to use from now on
// (`raftbus member stream repair`). Without one, membership operations
// stay stopped (Problem). It reports whether the cluster is now bound to
// s; the leader pass that follows publishes the replicated membership on
// it (a baseline, then every outcome) and decides the request.
func (m *Manager) repair(ctx context.Context, s *Stream) (bool, error) {
	recs, err := s.ReadAll(ctx, KindRequest)
	if err != nil {
		return false, err
	}
	st := m.cfg.Cluster.State()
	var req *Record
	for i := range recs {
		r := &recs[i]
		if r.Invalid == "" && r.Request.Op == OpRepairStream && requestID(*r, st.Stream.Created) == r.Request.ID {
			if _, done := decided(st, r.Request.ID); !done {
				req = r
			}
		}
	}
	if req == nil {
		return false, nil
	}
	if m.cfg.Cluster.Leader() != m.self {
		return false, errNotLeader
	}
	info, err := s.Info(ctx)
	if err != nil {
		return false, err
	}
	d := Decision{RequestID: req.Request.ID, Op: OpRepairStream, Seq: req.Seq}
	if _, err := m.cfg.Cluster.Rebind(ctx, d, s.Name(), info.Created); err != nil {
		return false, fmt.Errorf("membership: rebinding to stream %s: %w", s.Name(), err)
	}
	m.log.Warn("membership stream repaired: the cluster is bound to the new stream, and its replicated membership is published on it",
		"stream", s.Name(), "created", info.Created, "request", req.Request.ID, "by", req.Request.By)
	m.setProblem("")
	return true, nil
}
