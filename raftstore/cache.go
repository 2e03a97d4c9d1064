package raftstore

import (
	raftpb "go.etcd.io/raft/v3/raftpb"
)

// entryCache holds the newest entries of the log, a contiguous run that ends
// at the store's last index, bounded in encoded bytes. Raft reads recent
// entries to build MsgApp for followers that are caught up; serving those
// from memory avoids a Pebble read (and an unmarshal) per message. The
// entries are the ones passed to Save: Raft never mutates an entry once it
// is handed out, and neither does the store.
type entryCache struct {
	maxBytes int64
	ents     []*raftpb.Entry
	sizes    []int64 // encoded size of ents[i]
	bytes    int64
}

func (c *entryCache) empty() bool { return len(c.ents) == 0 }

// first is the index of the oldest cached entry; valid only if !empty().
func (c *entryCache) first() uint64 { return c.ents[0].GetIndex() }

// covers reports whether entry i is cached.
func (c *entryCache) covers(i uint64) bool {
	return len(c.ents) > 0 && i >= c.first() && i-c.first() < uint64(len(c.ents))
}

// get returns entry i, which must be covered.
func (c *entryCache) get(i uint64) *raftpb.Entry { return c.ents[i-c.first()] }

// put records entries just written to the log; they replace any cached
// entries at or after ents[0]'s index. sizes are their encoded sizes.
func (c *entryCache) put(ents []*raftpb.Entry, sizes []int64) {
	if c.maxBytes == 0 || len(ents) == 0 {
		c.reset()
		return
	}
	start := ents[0].GetIndex()
	switch {
	case c.empty() || start < c.first() || start > c.first()+uint64(len(c.ents)):
		// Not contiguous with what is cached: start over from ents.
		c.reset()
	default:
		// Drop the conflicting suffix, if any.
		keep := int(start - c.first())
		for i := keep; i < len(c.ents); i++ {
			c.bytes -= c.sizes[i]
			c.ents[i] = nil
		}
		c.ents, c.sizes = c.ents[:keep], c.sizes[:keep]
	}
	c.ents = append(c.ents, ents...)
	c.sizes = append(c.sizes, sizes...)
	for _, s := range sizes {
		c.bytes += s
	}
	c.evict()
}

// dropBefore forgets entries with an index below i (after a compaction).
func (c *entryCache) dropBefore(i uint64) {
	n := 0
	for n < len(c.ents) && c.ents[n].GetIndex() < i {
		n++
	}
	c.dropFront(n)
}

// evict drops the oldest entries until the cache fits its byte budget.
func (c *entryCache) evict() {
	n, over := 0, c.bytes-c.maxBytes
	for n < len(c.ents) && over > 0 {
		over -= c.sizes[n]
		n++
	}
	c.dropFront(n)
}

func (c *entryCache) dropFront(n int) {
	if n == 0 {
		return
	}
	for i := 0; i < n; i++ {
		c.bytes -= c.sizes[i]
		c.ents[i] = nil // let the GC reclaim the entry despite the shared array
	}
	c.ents, c.sizes = c.ents[n:], c.sizes[n:]
	if len(c.ents) == 0 {
		c.reset()
	}
}

func (c *entryCache) reset() {
	c.ents, c.sizes, c.bytes = nil, nil, 0
}
