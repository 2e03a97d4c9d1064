package raftbridge

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// replyRoutes remembers, for senders the directory does not know yet, which
// incarnation spoke for a Raft ID, so that Raft's replies to them (a new
// follower answering a leader it has not yet learned about) can be
// addressed. A route is only a way back to a validated sender: it is never
// membership, it is used only while the directory has no entry for the ID,
// it expires, and it dies with a tombstone of its ID or incarnation.
type replyRoutes struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[uint64]replyRoute
}

type replyRoute struct {
	inc     uuid.UUID
	expires time.Time
}

func newReplyRoutes(ttl time.Duration, maxRoutes int) *replyRoutes {
	return &replyRoutes{ttl: ttl, max: maxRoutes, now: time.Now, m: make(map[uint64]replyRoute)}
}

// remember records (or refreshes) the route to id through inc. When the
// table is full, the route closest to expiry makes room.
func (r *replyRoutes) remember(id uint64, inc uuid.UUID) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id]; !ok && len(r.m) >= r.max {
		var victim uint64
		var oldest time.Time
		first := true
		for k, v := range r.m {
			if first || v.expires.Before(oldest) {
				victim, oldest, first = k, v.expires, false
			}
		}
		delete(r.m, victim)
	}
	r.m[id] = replyRoute{inc: inc, expires: now.Add(r.ttl)}
}

// lookup returns the live route to id. Routes that expired, or whose ID or
// incarnation the directory has tombstoned, or whose ID the directory now
// knows, are discarded on the way.
func (r *replyRoutes) lookup(id uint64, dir Directory) (uuid.UUID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.m[id]
	if !ok {
		return uuid.Nil, false
	}
	if r.now().After(rt.expires) || dir.RemovedID(id) || dir.RemovedIncarnation(rt.inc) {
		delete(r.m, id)
		return uuid.Nil, false
	}
	if _, known := dir.Incarnation(id); known {
		delete(r.m, id) // the directory wins from now on
		return uuid.Nil, false
	}
	return rt.inc, true
}

// len returns the number of routes held (expired ones included).
func (r *replyRoutes) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
