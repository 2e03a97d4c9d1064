package node

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
)

// Member is one member of the cluster as recorded in the replicated state.
type Member struct {
	ID          uint64    `json:"-"`
	Name        string    `json:"name,omitempty"`
	Incarnation uuid.UUID `json:"incarnation"`
	ClientURL   string    `json:"client_url,omitempty"`
	Learner     bool      `json:"learner,omitempty"`
}

// HexID formats a Raft ID the way raftbus prints them everywhere.
func HexID(id uint64) string { return fmt.Sprintf("%016x", id) }

// ParseHexID parses a Raft ID printed by HexID (leading zeros optional).
func ParseHexID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad raft ID %q: expecting a non-zero hex number", s)
	}
	return id, nil
}

// MarshalJSON writes the Raft ID as a 16-digit hex string: 64-bit numbers
// do not survive JSON readers that use doubles.
func (m Member) MarshalJSON() ([]byte, error) {
	type plain Member
	return json.Marshal(struct {
		ID string `json:"id"`
		plain
	}{HexID(m.ID), plain(m)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *Member) UnmarshalJSON(b []byte) error {
	type plain Member
	var v struct {
		ID string `json:"id"`
		plain
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = Member(v.plain)
	if v.ID != "" {
		id, err := ParseHexID(v.ID)
		if err != nil {
			return err
		}
		m.ID = id
	}
	return nil
}

// confContext travels in a ConfChangeV2's Context: who is being added (and
// the proposal it answers, so the proposer can be told the outcome).
type confContext struct {
	Request uint64  `json:"request,omitempty"`
	Member  *Member `json:"member,omitempty"`
}

// membership is the replicated membership state: current members and
// tombstones. It is changed only by applying committed ConfChanges (or a
// snapshot), and it is included in every snapshot, so tombstones survive
// log compaction. It implements raftbridge.Directory.
type membership struct {
	mu          sync.RWMutex
	members     map[uint64]*Member
	removedIDs  map[uint64]bool
	removedIncs map[uuid.UUID]bool
	// version is the Raft index of the last applied membership change, the
	// same on every node that applied it.
	version uint64
}

func newMembership() *membership {
	return &membership{
		members:     map[uint64]*Member{},
		removedIDs:  map[uint64]bool{},
		removedIncs: map[uuid.UUID]bool{},
	}
}

// Incarnation implements raftbridge.Directory.
func (ms *membership) Incarnation(id uint64) (uuid.UUID, bool) {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	if m, ok := ms.members[id]; ok {
		return m.Incarnation, true
	}
	return uuid.Nil, false
}

// RemovedID implements raftbridge.Directory.
func (ms *membership) RemovedID(id uint64) bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	return ms.removedIDs[id]
}

// RemovedIncarnation implements raftbridge.Directory.
func (ms *membership) RemovedIncarnation(inc uuid.UUID) bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	return ms.removedIncs[inc]
}

// Version implements raftbridge.Directory.
func (ms *membership) Version() uint64 {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	return ms.version
}

// list returns the members sorted by ID.
func (ms *membership) list() []Member {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	out := make([]Member, 0, len(ms.members))
	for _, m := range ms.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

func (ms *membership) removed() (ids []uint64, incs []uuid.UUID) {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	for id := range ms.removedIDs {
		ids = append(ids, id)
	}
	for inc := range ms.removedIncs {
		incs = append(incs, inc)
	}
	slices.Sort(ids)
	slices.SortFunc(incs, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return ids, incs
}

// validate decides whether a committed change may take effect. A rejected
// change is applied to Raft as a no-op on every node alike, because the
// decision depends only on replicated state.
func (ms *membership) validate(cc *raftpb.ConfChangeSingle, ctx *confContext) error {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	id := cc.GetNodeId()
	if ms.removedIDs[id] {
		return fmt.Errorf("raft ID %s was removed and can never return", HexID(id))
	}
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		cur, exists := ms.members[id]
		if ctx == nil || ctx.Member == nil {
			if exists {
				return nil // promotion of a known member
			}
			return fmt.Errorf("adding raft ID %s without member details", HexID(id))
		}
		if ms.removedIncs[ctx.Member.Incarnation] {
			return fmt.Errorf("incarnation %s was removed and can never return", ctx.Member.Incarnation)
		}
		if exists && cur.Incarnation != ctx.Member.Incarnation {
			return fmt.Errorf("raft ID %s already belongs to incarnation %s", HexID(id), cur.Incarnation)
		}
		for oid, m := range ms.members {
			if oid != id && m.Incarnation == ctx.Member.Incarnation {
				return fmt.Errorf("incarnation %s is already member %s", m.Incarnation, HexID(oid))
			}
		}
	case raftpb.ConfChangeRemoveNode:
		if _, ok := ms.members[id]; !ok {
			return fmt.Errorf("raft ID %s is not a member", HexID(id))
		}
	}
	return nil
}

// apply records a validated change at Raft index. Applying the same change
// twice (a replay after restart) leaves the same state.
func (ms *membership) apply(index uint64, cc *raftpb.ConfChangeSingle, ctx *confContext) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	id := cc.GetNodeId()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		learner := cc.GetType() == raftpb.ConfChangeAddLearnerNode
		m, ok := ms.members[id]
		if !ok {
			m = &Member{ID: id}
			ms.members[id] = m
		}
		if ctx != nil && ctx.Member != nil {
			m.Name, m.Incarnation, m.ClientURL = ctx.Member.Name, ctx.Member.Incarnation, ctx.Member.ClientURL
		}
		m.Learner = learner
	case raftpb.ConfChangeRemoveNode:
		if m, ok := ms.members[id]; ok {
			ms.removedIncs[m.Incarnation] = true
			delete(ms.members, id)
		}
		ms.removedIDs[id] = true
	}
	if index > ms.version {
		ms.version = index
	}
}

// membershipImage is the membership part of a snapshot.
type membershipImage struct {
	Version             uint64      `json:"version"`
	Members             []Member    `json:"members"`
	RemovedIDs          []string    `json:"removed_ids,omitempty"`
	RemovedIncarnations []uuid.UUID `json:"removed_incarnations,omitempty"`
}

func (ms *membership) image() membershipImage {
	ids, incs := ms.removed()
	img := membershipImage{Version: ms.Version(), Members: ms.list(), RemovedIncarnations: incs}
	for _, id := range ids {
		img.RemovedIDs = append(img.RemovedIDs, HexID(id))
	}
	return img
}

func (ms *membership) restore(img membershipImage) error {
	members := map[uint64]*Member{}
	for i := range img.Members {
		m := img.Members[i]
		members[m.ID] = &m
	}
	removed := map[uint64]bool{}
	for _, s := range img.RemovedIDs {
		id, err := ParseHexID(s)
		if err != nil {
			return err
		}
		removed[id] = true
	}
	incs := map[uuid.UUID]bool{}
	for _, inc := range img.RemovedIncarnations {
		incs[inc] = true
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.members, ms.removedIDs, ms.removedIncs, ms.version = members, removed, incs, img.Version
	return nil
}
