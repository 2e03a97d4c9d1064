package raftbridge

import (
	"bytes"
	"maps"
	"slices"
	"sync"

	"github.com/google/uuid"
)

// Directory maps Raft IDs to the incarnation currently holding them and
// knows every tombstoned Raft ID and incarnation. The bridge consults it for
// every message in both directions, so lookups must be cheap and safe for
// concurrent use.
//
// The directory is fed from committed membership (ConfChanges applied from
// the Raft log); the bridge never changes it.
type Directory interface {
	// Incarnation returns the incarnation of a current member.
	Incarnation(id uint64) (uuid.UUID, bool)
	// RemovedID reports whether the Raft ID was removed from the cluster.
	RemovedID(id uint64) bool
	// RemovedIncarnation reports whether the incarnation was removed.
	RemovedIncarnation(inc uuid.UUID) bool
	// Version is the membership version the directory reflects: it grows
	// with every applied membership change.
	Version() uint64
}

// IncarnationLookup is an optional extension of a Directory: the member an
// incarnation belongs to. With it, the bridge also drops a sender whose Raft
// ID the directory does not know but whose incarnation belongs to another
// member (reason stale_incarnation) instead of passing it as an unknown
// sender.
type IncarnationLookup interface {
	MemberOf(inc uuid.UUID) (id uint64, ok bool)
}

// MemDirectory is a Directory held in memory, safe for concurrent use.
// Feed it from committed membership with [ApplyConfChange], carry it in
// your snapshots with [MemDirectory.Save] and [MemDirectory.Restore]; tests
// may also build one by hand with Set and Remove.
type MemDirectory struct {
	mu          sync.RWMutex
	members     map[uint64]uuid.UUID
	info        map[uint64]Member // PublicKey and Name only, of members that have them
	removedIDs  map[uint64]struct{}
	removedIncs map[uuid.UUID]struct{}
	version     uint64
}

// NewMemDirectory returns an empty directory at version 0.
func NewMemDirectory() *MemDirectory {
	return &MemDirectory{
		members:     make(map[uint64]uuid.UUID),
		info:        make(map[uint64]Member),
		removedIDs:  make(map[uint64]struct{}),
		removedIncs: make(map[uuid.UUID]struct{}),
	}
}

// Incarnation implements Directory.
func (d *MemDirectory) Incarnation(id uint64) (uuid.UUID, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	inc, ok := d.members[id]
	return inc, ok
}

// RemovedID implements Directory.
func (d *MemDirectory) RemovedID(id uint64) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.removedIDs[id]
	return ok
}

// RemovedIncarnation implements Directory.
func (d *MemDirectory) RemovedIncarnation(inc uuid.UUID) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.removedIncs[inc]
	return ok
}

// Version implements Directory.
func (d *MemDirectory) Version() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.version
}

// Set records inc as the incarnation of id and bumps the version. It
// refuses (returns false) to resurrect a tombstoned ID or incarnation.
func (d *MemDirectory) Set(id uint64, inc uuid.UUID) bool {
	return d.Add(Member{ID: ID(id), Incarnation: inc})
}

// Add records m as a current member, with its public key and name, and
// bumps the version. Like Set it refuses (returns false) a tombstoned ID or
// incarnation; it also refuses ID 0 and the nil incarnation.
func (d *MemDirectory) Add(m Member) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.addable(m) {
		return false
	}
	d.add(m)
	d.version++
	return true
}

// addable reports whether m may become a member. Callers hold d.mu.
func (d *MemDirectory) addable(m Member) bool {
	if m.ID == 0 || m.Incarnation == uuid.Nil {
		return false
	}
	_, goneID := d.removedIDs[uint64(m.ID)]
	_, goneInc := d.removedIncs[m.Incarnation]
	return !goneID && !goneInc
}

func (d *MemDirectory) add(m Member) {
	id := uint64(m.ID)
	d.members[id] = m.Incarnation
	if m.PublicKey != "" || m.Name != "" {
		d.info[id] = Member{PublicKey: m.PublicKey, Name: m.Name}
	} else {
		delete(d.info, id)
	}
}

// Member returns a current member with its public key and name (empty when
// it was added without them).
func (d *MemDirectory) Member(id uint64) (Member, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	inc, ok := d.members[id]
	if !ok {
		return Member{}, false
	}
	m := d.info[id]
	m.ID, m.Incarnation = ID(id), inc
	return m, true
}

// Remove tombstones id and its incarnation (if known) forever and bumps the
// version.
func (d *MemDirectory) Remove(id uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.remove(id)
	d.version++
}

func (d *MemDirectory) remove(id uint64) {
	if inc, ok := d.members[id]; ok {
		d.removedIncs[inc] = struct{}{}
		delete(d.members, id)
		delete(d.info, id)
	}
	d.removedIDs[id] = struct{}{}
}

// TombstoneIncarnation tombstones an incarnation that may never have been a
// member (for example one that announced itself and was then abandoned).
func (d *MemDirectory) TombstoneIncarnation(inc uuid.UUID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removedIncs[inc] = struct{}{}
	for id, cur := range d.members {
		if cur == inc {
			delete(d.members, id)
			delete(d.info, id)
		}
	}
	d.version++
}

// Members returns a copy of the current members.
func (d *MemDirectory) Members() map[uint64]uuid.UUID {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[uint64]uuid.UUID, len(d.members))
	for k, v := range d.members {
		out[k] = v
	}
	return out
}

// Tombstones returns the tombstoned Raft IDs and incarnations, sorted.
func (d *MemDirectory) Tombstones() ([]uint64, []uuid.UUID) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ids := slices.Sorted(maps.Keys(d.removedIDs))
	incs := slices.SortedFunc(maps.Keys(d.removedIncs), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return ids, incs
}

// MemberOf implements IncarnationLookup.
func (d *MemDirectory) MemberOf(inc uuid.UUID) (uint64, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for id, cur := range d.members {
		if cur == inc {
			return id, true
		}
	}
	return 0, false
}
