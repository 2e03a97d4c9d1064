package membership

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Attestations. A committed change takes effect for readers of the stream
// once a quorum of the voters it concerns has written it (quorum.go), so
// every voter, not only the leader, writes its own signed record of each
// change it applied (on its own members.committed subject). runAttester
// does that on every node, from replicated state.
//
// It writes only into the stream the cluster is bound to, only changes
// made while this node was a voter (a learner's record never counts), and
// never the bootstrap run or what a stream's baseline already covers:
// those are accepted from one signer. A stream holding no accepted change
// yet (a repaired stream before its baseline) gets nothing.

// attestation state for one stream binding; owned by runAttester.
type attester struct {
	created time.Time       // binding the state below belongs to
	floor   uint64          // changes at or below it are in effect already
	written map[uint64]bool // indexes this incarnation wrote
}

func (m *Manager) runAttester(ctx context.Context) {
	defer m.wg.Done()
	var s *Stream
	var a *attester
	for sleep(ctx, m.cfg.Poll) {
		if s == nil {
			var err error
			if s, err = OpenStream(ctx, m.cfg.Stream); err != nil {
				s = nil
				continue
			}
		}
		st := m.cfg.Cluster.State()
		if st.Stream.Name != s.Name() {
			continue
		}
		todo := changesToAttest(st, m.self, m.inc)
		if a != nil && a.created.Equal(st.Stream.Created) && !a.pending(todo) {
			continue
		}
		info, err := s.Info(ctx)
		if err != nil || !info.Created.Equal(st.Stream.Created) {
			a = nil // missing or recreated: never written into
			continue
		}
		if a == nil || !a.created.Equal(st.Stream.Created) {
			if a, err = m.loadAttester(ctx, s, st.Stream.Created); err != nil {
				m.log.Debug("reading the membership stream to attest changes", "err", err)
				a = nil
				continue
			}
		}
		for _, c := range todo {
			if c.Index <= a.floor || a.written[c.Index] {
				continue
			}
			if err := s.PublishCommitted(ctx, c); err != nil {
				m.log.Debug("attesting a committed change", "index", c.Index, "err", err)
				break
			}
			a.written[c.Index] = true
		}
	}
}

// pending reports whether a change of todo is still to be written.
func (a *attester) pending(todo []Committed) bool {
	for _, c := range todo {
		if c.Index > a.floor && !a.written[c.Index] {
			return true
		}
	}
	return false
}

// loadAttester reads what this incarnation wrote on s, and how far the
// stream's accepted changes go.
func (m *Manager) loadAttester(ctx context.Context, s *Stream, created time.Time) (*attester, error) {
	recs, err := s.ReadAll(ctx, KindCommitted)
	if err != nil {
		return nil, err
	}
	a := &attester{created: created, written: map[uint64]bool{}}
	for _, r := range recs {
		if r.Invalid == "" && r.Source == m.inc {
			a.written[r.Committed.Index] = true
		}
	}
	a.floor = Rebuild(recs).LastIndex()
	if a.floor == 0 {
		return nil, errNothingAccepted
	}
	return a, nil
}

// errNothingAccepted: the stream holds no accepted change yet (its leader
// has not published the bootstrap or a baseline).
var errNothingAccepted = errors.New("membership: the stream holds no accepted change yet")

// changesToAttest returns the changes of the replicated history that node
// self (incarnation inc) applied as a voter, after the bootstrap run.
func changesToAttest(st State, self HexID, inc uuid.UUID) []Committed {
	var out []Committed
	voter, boot := false, true
	for i, h := range st.History {
		if h.Rejected != "" || !IsChange(h.Op) {
			boot = false
			continue
		}
		boot = boot && h.Index == uint64(i+1) && (h.Op == OpAdd || h.Op == OpAddLearner) && h.RequestID == ""
		if voter && !boot {
			out = append(out, committedOf(h))
		}
		if h.Member.ID != self {
			continue
		}
		switch h.Op {
		case OpAdd:
			voter = h.Member.Incarnation == inc
		case OpAddLearner, OpRemove:
			voter = false
		case OpPromote:
			voter = true
		}
	}
	return out
}
