package kv

import (
	"container/heap"
	"context"
	"sync"
)

// MaxShards is the largest number of shards HandlerConfig.Shards may hold.
// A listing runs a read barrier on, and reads from, every shard, so its
// cost grows with the count; beyond a few thousand groups per process a
// listing would be dominated by that fan-out.
const MaxShards = 4096

// Shard is one Raft group of a key space split over several groups (see
// HandlerConfig.Shards and ShardOf).
type Shard struct {
	// Store is the group's state machine: GET requests for the shard's
	// keys, and listings, read it.
	Store *Store
	// Cluster is the group's local node: it replicates the shard's writes
	// (forwarding them to the group's leader) and provides the shard's
	// read barrier.
	Cluster Cluster
}

// FNV-1a 64 parameters (the ones hash/fnv uses).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// ShardOf returns the shard, in [0, n), that holds key in a key space of n
// shards: the FNV-1a 64 hash of the key's bytes modulo n. It returns 0 when
// n <= 1.
//
// The placement is part of a cluster's contract, like the command format:
// every node must route a key to the same group, and a group's state
// machine holds only the keys routed to it. Changing this function, or the
// number of shards, moves keys to groups that do not have them, so the
// shard count of a cluster is fixed when the cluster is created; kv has no
// resharding.
func ShardOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	// Inlined rather than hash/fnv, whose Write takes a []byte and would
	// copy every key.
	h := uint64(fnvOffset64)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= fnvPrime64
	}
	return int(h % uint64(n))
}

// shardFor returns the index and the shard that hold key.
func (h *handler) shardFor(key string) (int, Shard) {
	i := ShardOf(key, len(h.shards))
	return i, h.shards[i]
}

// shardLog returns the log attributes that name shard i, none when there is
// a single shard (its logs stay as they were before sharding).
func (h *handler) shardLog(i int) []any {
	if len(h.shards) == 1 {
		return nil
	}
	return []any{"shard", i}
}

// barrierAll runs the read barrier of every shard in parallel and returns
// once all have returned. The first failure cancels the others, so a
// listing fails as soon as one shard cannot serve it, and is what it
// returns, with the shard's index: the cancellations it causes are not
// errors of their shards.
func (h *handler) barrierAll(ctx context.Context) (int, error) {
	if len(h.shards) == 1 {
		return 0, h.shards[0].Cluster.ReadIndex(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		once   sync.Once
		failed int
		first  error
	)
	for i, s := range h.shards {
		wg.Go(func() {
			if err := s.Cluster.ReadIndex(ctx); err != nil {
				once.Do(func() {
					failed, first = i, err
					cancel()
				})
			}
		})
	}
	// Waiting for the canceled barriers too keeps a listing from leaving
	// work behind it; Cluster.ReadIndex returns when its context ends.
	wg.Wait()
	return failed, first
}

// mergeSlack is added to a shard's expected share of a listing when sizing
// the first read from each shard. ShardOf spreads keys evenly, so a shard
// rarely holds many more than limit/n of the keys listed; when it does,
// its cursor reads again.
const mergeSlack = 8

// merge returns the first limit keys in [start, end) (end "" = no upper
// bound) of all shards together, in ascending order: what one Store
// holding every shard's keys would return from Range. Entries share the
// stores' keys and values (see Store.scan) and must not be modified.
//
// Each shard is read through a cursor in batches sized to its expected
// share, so memory stays near limit entries however many shards there are,
// instead of limit entries per shard.
func (h *handler) merge(start, end string, limit int) []entry {
	n := len(h.shards)
	batch := limit // one shard: one read, exactly Store.Range
	if n > 1 {
		batch = min(limit, limit/n+mergeSlack)
	}
	hp := make(cursorHeap, 0, n)
	for _, s := range h.shards {
		c := &cursor{store: s.Store, next: start, end: end, batch: batch}
		if c.fill() {
			hp = append(hp, c)
		}
	}
	heap.Init(&hp)
	out := make([]entry, 0, min(limit, 1024))
	for len(out) < limit && len(hp) > 0 {
		c := hp[0]
		out = append(out, c.buf[0])
		c.buf = c.buf[1:]
		if len(c.buf) > 0 || (len(out) < limit && c.fill()) {
			heap.Fix(&hp, 0)
		} else {
			heap.Pop(&hp)
		}
	}
	return out
}

// cursor reads one shard's part of a listing in key order.
type cursor struct {
	store *Store
	buf   []entry // read, not yet merged; buf[0] is the cursor's head
	next  string  // where the next read starts
	end   string
	batch int
	done  bool // the last read reached the end of the range
}

// fill reads the next batch once buf is empty and reports whether the
// cursor has a head.
func (c *cursor) fill() bool {
	if len(c.buf) > 0 {
		return true
	}
	if c.done {
		return false
	}
	c.buf = c.store.scan(c.next, c.end, c.batch)
	c.done = len(c.buf) < c.batch
	if len(c.buf) > 0 {
		// The smallest key after the last one read.
		c.next = c.buf[len(c.buf)-1].key + "\x00"
	}
	return len(c.buf) > 0
}

// cursorHeap orders cursors by their head key; every cursor in it has one.
type cursorHeap []*cursor

func (h cursorHeap) Len() int           { return len(h) }
func (h cursorHeap) Less(i, j int) bool { return h[i].buf[0].key < h[j].buf[0].key }
func (h cursorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)        { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
