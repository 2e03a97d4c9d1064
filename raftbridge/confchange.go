package raftbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MaxConfContextBytes bounds the Context of a ConfChange that
// [DecodeConfContext] accepts: a member takes a few hundred bytes, and a
// log entry is input from whoever could propose it.
const MaxConfContextBytes = 4 << 10

// ErrRefused is wrapped by [ApplyConfChange] when the directory refuses a
// committed change (see there), and ErrBadContext when a ConfChange's
// Context is not a member in the format of [EncodeConfContext].
var (
	ErrRefused    = errors.New("raftbridge: membership change refused")
	ErrBadContext = errors.New("raftbridge: malformed ConfChange context")
)

// confMember is Member's JSON form, the "member" object of the reference
// node's ConfChange context (node.Member): the Raft ID as 16 hex digits,
// because 64-bit numbers do not survive JSON readers that use doubles.
type confMember struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Incarnation uuid.UUID `json:"incarnation"`
	PublicKey   string    `json:"public_key,omitempty"`
}

func (m Member) toJSON() confMember {
	return confMember{ID: m.ID.String(), Name: m.Name, Incarnation: m.Incarnation, PublicKey: m.PublicKey}
}

func (c confMember) member() (Member, error) {
	id, err := ParseID(c.ID)
	if err != nil {
		return Member{}, err
	}
	m := Member{ID: id, Incarnation: c.Incarnation, PublicKey: c.PublicKey, Name: c.Name}
	return m, m.check()
}

// check validates what a member record from the network may hold.
func (m Member) check() error {
	switch {
	case m.ID == 0:
		return errors.New("raft ID 0")
	case m.Incarnation == uuid.Nil:
		return errors.New("nil incarnation")
	case m.PublicKey != "" && !validUserKey(m.PublicKey):
		return fmt.Errorf("public key %.60q is not an nkey user public key", m.PublicKey)
	case len(m.Name) > 256:
		return fmt.Errorf("name of %d bytes (limit 256)", len(m.Name))
	}
	return nil
}

// validUserKey checks the shape of an nkey user public key (a 'U' and 55
// more base32 characters) without the nkeys package: raftbridge stays free
// of NATS. The bus's NATS permissions, not this check, authenticate keys.
func validUserKey(k string) bool {
	if len(k) != 56 || k[0] != 'U' {
		return false
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

// confContext is the whole context object; the reference node adds fields
// of its own (request IDs, times), which DecodeConfContext ignores.
type confContext struct {
	Member *confMember `json:"member,omitempty"`
}

// EncodeConfContext returns the Context for a ConfChange that adds m (as a
// voter or a learner), and for the raft.Peer list of a bootstrap:
//
//	{"member":{"id":"<16 hex digits>","name":"n4","incarnation":"<uuid>","public_key":"U..."}}
//
// It is the format the reference node writes, so a cluster can move between
// the node and one's own raft loop.
func EncodeConfContext(m Member) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadContext, err)
	}
	jm := m.toJSON()
	return json.Marshal(confContext{Member: &jm})
}

// DecodeConfContext parses a ConfChange Context written by
// [EncodeConfContext] (or by the reference node). It never panics; an
// error wraps ErrBadContext.
func DecodeConfContext(b []byte) (Member, error) {
	if len(b) > MaxConfContextBytes {
		return Member{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadContext, len(b), MaxConfContextBytes)
	}
	var c confContext
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return Member{}, fmt.Errorf("%w: %v", ErrBadContext, err)
	}
	if dec.More() {
		return Member{}, fmt.Errorf("%w: trailing data", ErrBadContext)
	}
	if c.Member == nil {
		return Member{}, fmt.Errorf("%w: no member", ErrBadContext)
	}
	m, err := c.Member.member()
	if err != nil {
		return Member{}, fmt.Errorf("%w: %v", ErrBadContext, err)
	}
	return m, nil
}

// noChange is what raft applies in place of a refused change: a change of
// Raft ID 0, which raft's confchange skips (etcd's own way to refuse a
// committed change), so raft's configuration stays in step with the
// directory. An empty ConfChangeV2 would not do: raft reads it as "leave
// the joint configuration" and panics outside one.
func noChange() raftpb.ConfChangeI {
	return &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(0)}
}

// ApplyConfChange records a committed ConfChange (v1 or v2) in d, and
// returns the change to hand to raft.Node.ApplyConfChange: cc itself, or,
// when d refuses it, a change raft ignores, so that on every node raft's
// configuration and the directory agree. Call it, in log order, for every
// committed EntryConfChange and EntryConfChangeV2 (decode the entry data
// with proto.Unmarshal), including those raft.StartNode commits for a
// bootstrap; never for anything else.
//
// Its decisions depend only on d and cc, so every node that applies the
// same log from the same directory image makes the same ones:
//
//   - ConfChangeAddNode and ConfChangeAddLearnerNode add the member the
//     Context names ([EncodeConfContext]); its Raft ID must be the change's.
//     Adding an ID that is already a member with the same incarnation (a
//     learner promoted, a change applied twice) needs no context and only
//     updates the key and name if a context is given.
//   - ConfChangeRemoveNode tombstones the ID and its incarnation forever,
//     member or not.
//   - ConfChangeUpdateNode and changes of ID 0 change nothing.
//
// A change is refused whole (nothing applied, the error wraps ErrRefused
// and, for a bad context, ErrBadContext) when an add lacks a valid
// context, names a tombstoned Raft ID or incarnation, an ID held by
// another incarnation (remove it first), or an incarnation that is another
// member's. Check proposals against the same rules before proposing; a
// refusal at apply time means the proposer did not.
func ApplyConfChange(d *MemDirectory, cc raftpb.ConfChangeI) (raftpb.ConfChangeI, error) {
	v2 := asV2(cc)
	if v2 == nil {
		return noChange(), fmt.Errorf("%w: no change", ErrRefused)
	}
	var ctx *Member
	var ctxErr error
	if len(v2.GetContext()) > 0 {
		m, err := DecodeConfContext(v2.GetContext())
		if err != nil {
			ctxErr = err // needed only by an add of a new member
		} else {
			ctx = &m
		}
	}
	return applyChanges(d, v2, ctx, ctxErr, cc)
}

// ApplyConfChangeMember is [ApplyConfChange] for a caller whose ConfChange
// contexts are in a format of its own: m is the member the context of cc
// names (nil when it names none), already decoded; cc's Context is not
// read. The rules, and so the decisions, are those of ApplyConfChange;
// the reference node applies every committed change through it.
func ApplyConfChangeMember(d *MemDirectory, cc raftpb.ConfChangeI, m *Member) (raftpb.ConfChangeI, error) {
	v2 := asV2(cc)
	if v2 == nil {
		return noChange(), fmt.Errorf("%w: no change", ErrRefused)
	}
	var ctxErr error
	if m != nil {
		if err := m.check(); err != nil {
			m, ctxErr = nil, fmt.Errorf("%w: %v", ErrBadContext, err)
		}
	}
	return applyChanges(d, v2, m, ctxErr, cc)
}

// asV2 is cc as a ConfChangeV2, nil for no change (nil, or a nil pointer).
func asV2(cc raftpb.ConfChangeI) *raftpb.ConfChangeV2 {
	switch c := cc.(type) {
	case nil:
		return nil
	case *raftpb.ConfChange:
		if c == nil {
			return nil
		}
		return c.AsV2()
	case *raftpb.ConfChangeV2:
		return c
	default:
		return c.AsV2()
	}
}

func applyChanges(d *MemDirectory, v2 *raftpb.ConfChangeV2, ctx *Member, ctxErr error, cc raftpb.ConfChangeI) (raftpb.ConfChangeI, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	type step struct {
		add    *Member
		remove uint64
	}
	var steps []step
	// First pass: decide every change, so a refused change applies nothing.
	for _, c := range v2.GetChanges() {
		id := c.GetNodeId()
		if id == 0 {
			continue
		}
		switch c.GetType() {
		case raftpb.ConfChangeRemoveNode:
			_, gone := d.removedIDs[id]
			if _, isMember := d.members[id]; isMember || !gone {
				steps = append(steps, step{remove: id})
			}
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			m, err := d.decideAdd(id, ctx, ctxErr)
			if err != nil {
				return noChange(), fmt.Errorf("%w: add %s: %w", ErrRefused, ID(id), err)
			}
			if m != nil {
				steps = append(steps, step{add: m})
			}
		}
	}
	for _, s := range steps {
		if s.add != nil {
			d.add(*s.add)
		} else {
			d.remove(s.remove)
		}
		d.version++
	}
	return cc, nil
}

// decideAdd returns the member an add of id records (nil: nothing to
// record), or why it is refused. Callers hold d.mu.
func (d *MemDirectory) decideAdd(id uint64, ctx *Member, ctxErr error) (*Member, error) {
	cur, isMember := d.members[id]
	if ctx == nil || uint64(ctx.ID) != id {
		if isMember {
			return nil, nil // a promotion, or a change applied twice
		}
		if ctxErr != nil {
			return nil, ctxErr
		}
		if ctx != nil {
			return nil, fmt.Errorf("%w: the context names %s", ErrBadContext, ctx.ID)
		}
		return nil, fmt.Errorf("%w: no context names the member", ErrBadContext)
	}
	if !d.addable(*ctx) {
		return nil, fmt.Errorf("raft ID or incarnation %s is tombstoned", ctx.Incarnation)
	}
	if isMember && cur != ctx.Incarnation {
		return nil, fmt.Errorf("held by incarnation %s; remove it first", cur)
	}
	for other, inc := range d.members {
		if inc == ctx.Incarnation && other != id {
			return nil, fmt.Errorf("incarnation %s is member %s", inc, ID(other))
		}
	}
	if isMember && d.info[id] == (Member{PublicKey: ctx.PublicKey, Name: ctx.Name}) {
		return nil, nil // applied before: a replay after a restart
	}
	m := *ctx
	return &m, nil
}
