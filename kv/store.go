package kv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/btree"

	"github.com/raftbus/raftbus/node"
)

// Store is the replicated key-value state machine. It implements
// node.StateMachine: the node calls Apply, Snapshot and Restore from its
// apply goroutine, while any number of goroutines (HTTP handlers) read it
// concurrently with Get, Range, Prefix, Len, AppliedIndex and Digest.
//
// Each Apply runs under the write lock, so a reader sees the state either
// before or after an entry, never in between. Long reads (Digest,
// WriteSnapshot) work on a copy-on-write clone of the tree and hold the lock
// only for the O(1) clone, so they do not stall Apply.
//
// Keys are non-empty byte strings, kept sorted by bytewise comparison. The
// Store itself accepts any such key; the HTTP API is stricter (see
// HandlerConfig). Create a Store with NewStore.
type Store struct {
	mu      sync.RWMutex
	tree    *btree.BTreeG[entry]
	applied uint64
	// encoded is the sum of the snapshot record sizes of all entries, kept
	// up to date by Apply so Snapshot can allocate its buffer exactly once.
	encoded int64
}

var _ node.StateMachine = (*Store)(nil)

// entry is one key as stored in the tree. Its value slice is never modified
// in place once stored (a put stores a new slice), which is what lets clones
// of the tree share it.
type entry struct {
	key         string
	value       []byte
	createIndex uint64
	modIndex    uint64
}

// btreeDegree trades node size (2*degree-1 entries of 56 bytes) against
// tree depth; 32 is the value google/btree's own benchmarks favour.
const btreeDegree = 32

func lessEntry(a, b entry) bool { return a.key < b.key }

func newTree() *btree.BTreeG[entry] { return btree.NewG(btreeDegree, lessEntry) }

// Value is a key's value with the Raft indexes of the entries that created
// it and that last modified it (like etcd's create_revision and
// mod_revision). Deleting and re-creating a key resets CreateIndex.
type Value struct {
	Data        []byte
	CreateIndex uint64
	ModIndex    uint64
}

// KV is a key with its value, as returned by Range and Prefix.
type KV struct {
	Key string
	Value
}

// Result is what Apply returns for a valid command; node hands it to the
// proposer (kv's HTTP handlers read it to answer PUT and DELETE).
type Result struct {
	Op    Op
	Key   string
	Index uint64 // index of the entry that carried the command
	// Existed reports whether the key existed before the command: for a put
	// false means it was created, for a delete true means it was removed.
	Existed bool
}

// NewStore returns an empty Store with applied index 0.
func NewStore() *Store {
	return &Store{tree: newTree()}
}

// Apply applies the command in data as the entry at index, which must be
// greater than the applied index (entries the node does not pass, such as
// configuration changes, leave gaps; that is fine). Empty data is the no-op
// entry a new leader appends: it only advances the applied index.
//
// A valid command returns a Result. Malformed data returns an error wrapping
// ErrBadCommand and changes nothing but the applied index, so every replica
// skips it the same way. An index at or below the applied index returns
// ErrStaleIndex and changes nothing at all.
func (s *Store) Apply(index uint64, data []byte) (any, error) {
	// Decoding is pure, so it runs before taking the lock.
	var cmd Command
	var decodeErr error
	if len(data) > 0 {
		cmd, decodeErr = DecodeCommand(data)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied {
		return nil, fmt.Errorf("%w: entry %d, applied index is %d", ErrStaleIndex, index, s.applied)
	}
	s.applied = index
	if len(data) == 0 {
		return nil, nil
	}
	if decodeErr != nil {
		return nil, fmt.Errorf("entry %d: %w", index, decodeErr)
	}
	res := Result{Op: cmd.Op, Key: cmd.Key, Index: index}
	switch cmd.Op {
	case OpPut:
		e := entry{key: cmd.Key, value: cmd.Value, createIndex: index, modIndex: index}
		if old, ok := s.tree.Get(entry{key: cmd.Key}); ok {
			res.Existed = true
			e.createIndex = old.createIndex
			s.encoded -= int64(recordSize(old))
		}
		s.tree.ReplaceOrInsert(e)
		s.encoded += int64(recordSize(e))
	case OpDelete:
		if old, ok := s.tree.Delete(entry{key: cmd.Key}); ok {
			res.Existed = true
			s.encoded -= int64(recordSize(old))
		}
	}
	return res, nil
}

// AppliedIndex returns the index of the last entry applied (or restored
// from a snapshot).
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Len returns the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tree.Len()
}

// Get returns the value of key and whether the key exists. Value.Data is a
// copy the caller may keep and modify.
func (s *Store) Get(key string) (Value, bool) {
	s.mu.RLock()
	e, ok := s.tree.Get(entry{key: key})
	s.mu.RUnlock()
	if !ok {
		return Value{}, false
	}
	return e.toValue(), true
}

// Range returns the keys in [start, end) in ascending order, at most limit
// of them (limit <= 0: no limit). An empty end means no upper bound; an
// empty start begins at the first key. Values are copies.
//
// To learn whether more keys follow, ask for limit+1.
func (s *Store) Range(start, end string, limit int) []KV {
	entries := s.scan(start, end, limit)
	if entries == nil {
		return nil
	}
	// Copying after the lock is released is safe: stored values are never
	// modified in place (see entry).
	out := make([]KV, len(entries))
	for i, e := range entries {
		out[i] = KV{Key: e.key, Value: e.toValue()}
	}
	return out
}

// scan is Range without the copies: the entries share the tree's keys and
// values, which is safe because a stored value is never modified in place
// (see entry), and lets a listing copy only the values it returns.
func (s *Store) scan(start, end string, limit int) []entry {
	if end != "" && start >= end {
		return nil
	}
	var out []entry
	visit := func(e entry) bool {
		out = append(out, e)
		return limit <= 0 || len(out) < limit
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if end == "" {
		s.tree.AscendGreaterOrEqual(entry{key: start}, visit)
	} else {
		s.tree.AscendRange(entry{key: start}, entry{key: end}, visit)
	}
	return out
}

// Prefix returns the keys starting with prefix in ascending order, at most
// limit of them (limit <= 0: no limit). An empty prefix lists every key.
func (s *Store) Prefix(prefix string, limit int) []KV {
	return s.Range(prefix, PrefixEnd(prefix), limit)
}

// PrefixEnd returns the smallest key greater than every key that starts with
// prefix, for use as the end of a Range; "" (no upper bound) when there is
// none, which is the case for "" and for prefixes made only of 0xff bytes.
func PrefixEnd(prefix string) string {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			return prefix[:i] + string([]byte{prefix[i] + 1})
		}
	}
	return ""
}

// Digest returns a SHA-256 over all keys and values in key order (each
// length-prefixed, so the encoding is unambiguous). It deliberately leaves
// out the applied index and the create/mod indexes: two stores with the same
// keys and values have the same digest, so tests can compare replicas
// cheaply. It runs on a clone and does not block Apply.
func (s *Store) Digest() [sha256.Size]byte {
	tree, _, _ := s.clone()
	h := sha256.New()
	// Batch the many small writes; hash.Hash writes never fail.
	w := bufio.NewWriterSize(h, 64<<10)
	var scratch [binary.MaxVarintLen64]byte
	tree.Ascend(func(e entry) bool {
		w.Write(binary.AppendUvarint(scratch[:0], uint64(len(e.key))))
		w.WriteString(e.key)
		w.Write(binary.AppendUvarint(scratch[:0], uint64(len(e.value))))
		w.Write(e.value)
		return true
	})
	w.Flush()
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// clone returns a copy-on-write snapshot of the tree with the applied index
// and encoded size that go with it. The clone is read-only for the caller
// and needs no lock.
func (s *Store) clone() (*btree.BTreeG[entry], uint64, int64) {
	// Clone rewrites the tree's copy-on-write context, so it needs the
	// exclusive lock; it is O(1).
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tree.Clone(), s.applied, s.encoded
}

func (e entry) toValue() Value {
	return Value{Data: bytes.Clone(e.value), CreateIndex: e.createIndex, ModIndex: e.modIndex}
}
