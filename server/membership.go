package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
)

// clusterAdapter lets the membership manager drive the node.
type clusterAdapter struct{ n *node.Node }

var _ membership.Cluster = clusterAdapter{}

func (a clusterAdapter) Self() (membership.HexID, uuid.UUID) {
	st := a.n.Status()
	return membership.HexID(a.n.ID()), st.Incarnation
}

func (a clusterAdapter) Leader() membership.HexID { return membership.HexID(a.n.Leader()) }

func toRecordMember(m node.Member) membership.Member {
	return membership.Member{ID: membership.HexID(m.ID), Name: m.Name, Incarnation: m.Incarnation, ClientURL: m.ClientURL, Learner: m.Learner}
}

func (a clusterAdapter) State() membership.State {
	ms := a.n.Membership()
	// The version operators see is that of the last change that took
	// effect: rejected changes are settled in Raft but recorded in the
	// stream only as outcomes, so they must not make a request stale.
	st := membership.State{NextID: membership.HexID(ms.NextID), Requests: ms.Requests}
	for _, h := range ms.History {
		if h.Rejected == "" {
			st.Version = h.Index
		}
	}
	for _, m := range ms.Members {
		st.Members = append(st.Members, toRecordMember(m))
	}
	for _, h := range ms.History {
		st.History = append(st.History, membership.Settled{
			Committed: membership.Committed{Index: h.Index, Op: h.Op, Member: toRecordMember(h.Member), RequestID: h.RequestID, Version: h.Index},
			Rejected:  h.Rejected, Code: h.Code,
		})
	}
	if ms.Stream != nil {
		st.StreamName, st.StreamCreated = ms.Stream.Name, ms.Stream.Created
	}
	return st
}

func (a clusterAdapter) Change(ctx context.Context, requestID, op string, m membership.Member) (uint64, error) {
	idx, err := a.n.ChangeMembership(ctx, node.MembershipChange{RequestID: requestID, Op: op,
		Member: node.Member{ID: uint64(m.ID), Name: m.Name, Incarnation: m.Incarnation, ClientURL: m.ClientURL}})
	switch code := node.RejectionCode(err); {
	case err == nil:
		return idx, nil
	case errors.Is(err, node.ErrDuplicateRequest):
		return idx, fmt.Errorf("%w: %v", membership.ErrAlreadySettled, err)
	case errors.Is(err, node.ErrNoSuchMember), errors.Is(err, node.ErrLastVoter), errors.Is(err, node.ErrTombstoned), errors.Is(err, node.ErrInvalidChange):
		return idx, &membership.RejectionError{Code: code, Reason: err.Error()}
	default:
		return idx, err
	}
}

func (a clusterAdapter) Bind(ctx context.Context, name string, created time.Time) error {
	return a.n.BindStream(ctx, node.StreamBinding{Name: name, Created: created})
}

func (a clusterAdapter) TransferLeadership(ctx context.Context) error {
	to := a.n.BestTransferee()
	if to == 0 {
		return errors.New("no other voter to hand leadership to")
	}
	return a.n.TransferLeadership(ctx, to)
}

func (a clusterAdapter) CaughtUp(id membership.HexID) bool { return a.n.CaughtUp(uint64(id), 16) }

func (a clusterAdapter) Removed(reason string) { a.n.MarkRemoved(reason) }
