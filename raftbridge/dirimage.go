package raftbridge

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// ErrBadImage is wrapped by [MemDirectory.Restore] for an image it cannot
// use.
var ErrBadImage = errors.New("raftbridge: malformed directory image")

// imageFormat is the version of the directory image; Restore refuses
// others.
const imageFormat = 1

// dirImage is the directory image: JSON, so that it can sit beside the
// user's own state in a snapshot and be read by tools.
type dirImage struct {
	Format      int          `json:"format"`
	Version     uint64       `json:"version"`
	Members     []confMember `json:"members"`
	RemovedIDs  []string     `json:"removed_ids"`
	RemovedIncs []uuid.UUID  `json:"removed_incarnations"`
}

// Save returns an image of the directory (members with their keys and
// names, every tombstone, the version) to put in the application's
// snapshot next to its own state, at the index the snapshot covers, and to
// hand to [MemDirectory.Restore] when a snapshot is restored (on restart, or
// received from the leader). Without it, a node restarted or caught up
// from a snapshot taken after a removal would have forgotten the
// tombstone: the removed incarnation could talk to it again.
//
// The image is deterministic (sorted), so equal directories give equal
// bytes.
func (d *MemDirectory) Save() []byte {
	d.mu.RLock()
	img := dirImage{Format: imageFormat, Version: d.version, Members: []confMember{}, RemovedIDs: []string{}, RemovedIncs: []uuid.UUID{}}
	for id, inc := range d.members {
		m := d.info[id]
		m.ID, m.Incarnation = ID(id), inc
		img.Members = append(img.Members, m.toJSON())
	}
	for id := range d.removedIDs {
		img.RemovedIDs = append(img.RemovedIDs, ID(id).String())
	}
	for inc := range d.removedIncs {
		img.RemovedIncs = append(img.RemovedIncs, inc)
	}
	d.mu.RUnlock()
	slices.SortFunc(img.Members, func(a, b confMember) int { return cmp.Compare(a.ID, b.ID) })
	slices.Sort(img.RemovedIDs)
	slices.SortFunc(img.RemovedIncs, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	b, err := json.Marshal(img)
	if err != nil {
		panic(fmt.Sprintf("raftbridge: marshal directory image: %v", err)) // plain data: cannot fail
	}
	return b
}

// Restore makes the directory what the image (from [MemDirectory.Save])
// says: its members replace the current ones, and its tombstones are
// added to those already known (a tombstone is never forgotten, so a
// member the directory tombstoned stays out even if an older image lists
// it). The version becomes the image's, or stays if it was higher. Call it
// before the raft node starts on restart, and whenever a snapshot is
// applied.
//
// Restore checks the whole image before it changes anything; an error
// wraps ErrBadImage and leaves the directory as it was. It never panics.
func (d *MemDirectory) Restore(image []byte) error {
	var img dirImage
	dec := json.NewDecoder(bytes.NewReader(image))
	if err := dec.Decode(&img); err != nil {
		return fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data", ErrBadImage)
	}
	if img.Format != imageFormat {
		return fmt.Errorf("%w: format %d, this build reads %d", ErrBadImage, img.Format, imageFormat)
	}
	removedIDs := make(map[uint64]struct{}, len(img.RemovedIDs))
	for _, s := range img.RemovedIDs {
		id, err := ParseID(s)
		if err != nil {
			return fmt.Errorf("%w: removed raft ID %q", ErrBadImage, s)
		}
		removedIDs[uint64(id)] = struct{}{}
	}
	removedIncs := make(map[uuid.UUID]struct{}, len(img.RemovedIncs))
	for _, inc := range img.RemovedIncs {
		if inc == uuid.Nil {
			return fmt.Errorf("%w: nil removed incarnation", ErrBadImage)
		}
		removedIncs[inc] = struct{}{}
	}
	members := make([]Member, 0, len(img.Members))
	ids := make(map[ID]bool, len(img.Members))
	incs := make(map[uuid.UUID]bool, len(img.Members))
	for _, cm := range img.Members {
		m, err := cm.member()
		if err != nil {
			return fmt.Errorf("%w: member %q: %v", ErrBadImage, cm.ID, err)
		}
		if ids[m.ID] || incs[m.Incarnation] {
			return fmt.Errorf("%w: member %s or incarnation %s listed twice", ErrBadImage, m.ID, m.Incarnation)
		}
		_, goneID := removedIDs[uint64(m.ID)]
		_, goneInc := removedIncs[m.Incarnation]
		if goneID || goneInc {
			return fmt.Errorf("%w: member %s is also tombstoned", ErrBadImage, m.ID)
		}
		ids[m.ID], incs[m.Incarnation] = true, true
		members = append(members, m)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range removedIDs {
		d.removedIDs[id] = struct{}{}
	}
	for inc := range removedIncs {
		d.removedIncs[inc] = struct{}{}
	}
	clear(d.members)
	clear(d.info)
	for _, m := range members {
		if d.addable(m) {
			d.add(m)
		}
	}
	d.version = max(d.version, img.Version)
	return nil
}
