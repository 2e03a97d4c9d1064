package node

import (
	"context"
	"sync"
)

// indexWaiter lets goroutines wait until a monotonically growing index
// (applied, durable) reaches a value.
type indexWaiter struct {
	mu      sync.Mutex
	cur     uint64
	waiters map[uint64][]chan struct{}
}

func newIndexWaiter(start uint64) *indexWaiter {
	return &indexWaiter{cur: start, waiters: map[uint64][]chan struct{}{}}
}

func (w *indexWaiter) current() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// advance raises the index and releases every waiter it satisfies.
func (w *indexWaiter) advance(idx uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if idx <= w.cur {
		return
	}
	w.cur = idx
	for at, chs := range w.waiters {
		if at <= idx {
			for _, ch := range chs {
				close(ch)
			}
			delete(w.waiters, at)
		}
	}
}

// wait returns when the index reaches idx, ctx is done or stop is closed.
func (w *indexWaiter) wait(ctx context.Context, idx uint64, stop <-chan struct{}) error {
	w.mu.Lock()
	if w.cur >= idx {
		w.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	w.waiters[idx] = append(w.waiters[idx], ch)
	w.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrStopped
	}
}

// result is what a waiting proposer receives.
type result struct {
	index uint64
	value any
	err   error
}

// requests tracks proposals and read-index requests waiting for an answer,
// by request ID.
type requests[T any] struct {
	mu      sync.Mutex
	pending map[uint64]chan T
}

func newRequests[T any]() *requests[T] {
	return &requests[T]{pending: map[uint64]chan T{}}
}

func (r *requests[T]) register(id uint64) chan T {
	ch := make(chan T, 1)
	r.mu.Lock()
	r.pending[id] = ch
	r.mu.Unlock()
	return ch
}

func (r *requests[T]) cancel(id uint64) {
	r.mu.Lock()
	delete(r.pending, id)
	r.mu.Unlock()
}

// trigger answers request id if someone waits for it.
func (r *requests[T]) trigger(id uint64, v T) bool {
	r.mu.Lock()
	ch, ok := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if ok {
		ch <- v
	}
	return ok
}

func (r *requests[T]) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}
