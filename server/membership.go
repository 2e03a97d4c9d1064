package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
)

// clusterAdapter lets the membership manager drive the node.
type clusterAdapter struct{ n *node.Node }

var _ membership.Cluster = clusterAdapter{}

func (a clusterAdapter) Self() (membership.HexID, uuid.UUID) {
	st := a.n.Status()
	return membership.HexID(a.n.ID()), st.Incarnation
}

func (a clusterAdapter) Leader() membership.HexID { return membership.HexID(a.n.Leader()) }

// State is the node's membership: one model, no conversion.
func (a clusterAdapter) State() membership.State { return a.n.Membership() }

func (a clusterAdapter) Change(ctx context.Context, d membership.Decision) (uint64, error) {
	idx, err := a.n.ChangeMembership(ctx, node.MembershipChange{RequestID: d.RequestID, Op: d.Op, Member: d.Member,
		Seq: d.Seq, ExpectVersion: d.ExpectVersion})
	switch code := node.RejectionCode(err); {
	case err == nil:
		return idx, nil
	case errors.Is(err, node.ErrDuplicateRequest):
		return idx, fmt.Errorf("%w: %v", membership.ErrAlreadySettled, err)
	case errors.Is(err, node.ErrNoSuchMember), errors.Is(err, node.ErrLastVoter), errors.Is(err, node.ErrTombstoned),
		errors.Is(err, node.ErrInvalidChange), errors.Is(err, node.ErrConflict):
		return idx, &membership.RejectionError{Code: code, Reason: err.Error()}
	default:
		return idx, err
	}
}

func (a clusterAdapter) Reject(ctx context.Context, d membership.Decision, code, reason string) (uint64, error) {
	idx, err := a.n.RejectMembership(ctx, node.Rejection{RequestID: d.RequestID, Seq: d.Seq, Op: d.Op,
		Member: d.Member, Code: code, Reason: reason})
	if errors.Is(err, node.ErrDuplicateRequest) {
		return idx, fmt.Errorf("%w: %v", membership.ErrAlreadySettled, err)
	}
	return idx, err
}

func (a clusterAdapter) Rebind(ctx context.Context, d membership.Decision, name string, created time.Time) (uint64, error) {
	idx, err := a.n.RebindStream(ctx, node.Rebinding{Stream: node.StreamBinding{Name: name, Created: created}, RequestID: d.RequestID, Seq: d.Seq})
	if errors.Is(err, node.ErrDuplicateRequest) {
		return idx, fmt.Errorf("%w: %v", membership.ErrAlreadySettled, err)
	}
	return idx, err
}

func (a clusterAdapter) Barrier(ctx context.Context) error { return a.n.ReadIndex(ctx) }

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

// loadKey loads the incarnation's key, first giving a directory created
// before keys existed one (datadir.EnsureKey). The caller holds the lock.
func loadKey(dir string, id *datadir.Identity) (*datadir.Identity, nkeys.KeyPair, error) {
	if id.PublicKey == "" {
		var err error
		if id, err = datadir.EnsureKey(dir); err != nil {
			return nil, nil, err
		}
	}
	kp, err := datadir.LoadKey(dir)
	if err != nil {
		return nil, nil, err
	}
	return id, kp, nil
}

// bootstrapKeys fills in and checks the public keys of the initial
// members: the bootstrap entries are the first member records, and every
// member verifies the others' membership records against them, so callers
// should give every member's key (datadir.Identity.PublicKey). A
// single-node bootstrap of this node may leave its key out: it is filled
// in from the identity (no other node writes these entries, so they cannot
// diverge). A member without a key can bootstrap, but readers of the
// membership stream reject every record it signs; missing keys are
// returned so that the caller can warn.
func bootstrapKeys(peers []node.Member, id *datadir.Identity) (_ []node.Member, missing []string, _ error) {
	if len(peers) == 0 {
		return peers, nil, nil
	}
	peers = slices.Clone(peers)
	for i := range peers {
		p := &peers[i]
		if p.Incarnation == id.Incarnation {
			if p.PublicKey == "" && len(peers) == 1 {
				p.PublicKey = id.PublicKey
			}
			if p.PublicKey != "" && p.PublicKey != id.PublicKey {
				return nil, nil, fmt.Errorf("server: bootstrap member %s names key %s, but %s has key %s", raftbridge.ID(p.ID).String(), p.PublicKey, id, id.PublicKey)
			}
		}
		switch {
		case p.PublicKey == "":
			missing = append(missing, raftbridge.ID(p.ID).String())
		case !nkeys.IsValidPublicUserKey(p.PublicKey):
			return nil, nil, fmt.Errorf("server: bootstrap member %s (%s) has public key %q, which is not an nkey user key", raftbridge.ID(p.ID).String(), p.Name, p.PublicKey)
		}
	}
	return peers, missing, nil
}

// joinMembers returns the cluster's current members as the membership
// stream's verified records give them (membership.Rebuild), for a node
// that joins with empty storage. Without them it could not admit the
// leader's first messages; on failure it logs and returns none (the node
// then waits for a leader it can admit, which never comes, so the problem
// is logged at error level).
func (s *Server) joinMembers(cluster uuid.UUID, group uint64) []node.Member {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(s.cfg.Conn)
	if err == nil {
		var st *membership.Stream
		if st, err = membership.OpenStream(ctx, membership.StreamConfig{JS: js, Prefix: s.prefix(), Cluster: cluster, Group: group}); err == nil {
			var recs []membership.Record
			if recs, err = st.ReadAll(ctx, membership.KindCommitted); err == nil {
				d := membership.Rebuild(recs)
				if d.Version == 0 && group != 0 {
					// A group bootstrapped with the cluster whose leader
					// has not written its records yet: its members are
					// the bootstrap's, which group 0's verified records
					// name. Without them this node would drop the group's
					// leader as an unknown sender once it is added.
					return s.joinMembers(cluster, 0)
				}
				var out []node.Member
				for _, m := range d.Sorted() {
					m.AutoPromote = false // not part of the directory the joiner starts from
					out = append(out, m)
				}
				if len(d.Rejected) > 0 {
					s.log.Warn("skipped membership records while learning the members to join", "rejected", d.RejectedCounts())
				}
				return out
			}
		}
	}
	s.log.Error("cannot learn the cluster's members from the membership stream; the leader's messages will be dropped as unknown", "err", err)
	return nil
}
