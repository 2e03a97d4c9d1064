package kv

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// mustApply applies data at index and fails the test on error.
func mustApply(t testing.TB, s *Store, index uint64, data []byte) Result {
	t.Helper()
	res, err := s.Apply(index, data)
	if err != nil {
		t.Fatalf("Apply(%d): %v", index, err)
	}
	r, ok := res.(Result)
	if !ok {
		t.Fatalf("Apply(%d) result %T, want Result", index, res)
	}
	return r
}

func TestStorePutGetDelete(t *testing.T) {
	s := NewStore()
	if _, ok := s.Get("k"); ok {
		t.Fatal("empty store has k")
	}
	if r := mustApply(t, s, 1, EncodePut("k", []byte("v1"))); r != (Result{Op: OpPut, Key: "k", Index: 1}) {
		t.Fatalf("first put: %+v", r)
	}
	if r := mustApply(t, s, 2, EncodePut("k", []byte("v2"))); !r.Existed {
		t.Fatalf("overwrite: %+v, want Existed", r)
	}
	v, ok := s.Get("k")
	if !ok || string(v.Data) != "v2" || v.CreateIndex != 1 || v.ModIndex != 2 {
		t.Fatalf("Get after overwrite: %+v %v", v, ok)
	}
	if r := mustApply(t, s, 3, EncodeDelete("k")); r != (Result{Op: OpDelete, Key: "k", Index: 3, Existed: true}) {
		t.Fatalf("delete: %+v", r)
	}
	if _, ok := s.Get("k"); ok {
		t.Fatal("k still present after delete")
	}
	if r := mustApply(t, s, 4, EncodeDelete("k")); r.Existed {
		t.Fatalf("delete of a missing key: %+v", r)
	}
	// Re-creating a key starts a new life: a new create index.
	mustApply(t, s, 7, EncodePut("k", nil))
	v, ok = s.Get("k")
	if !ok || len(v.Data) != 0 || v.CreateIndex != 7 || v.ModIndex != 7 {
		t.Fatalf("Get after re-create: %+v %v", v, ok)
	}
	if s.AppliedIndex() != 7 || s.Len() != 1 {
		t.Fatalf("applied %d, len %d; want 7, 1", s.AppliedIndex(), s.Len())
	}
}

func TestStoreGetReturnsCopy(t *testing.T) {
	s := NewStore()
	mustApply(t, s, 1, EncodePut("k", []byte("value")))
	v, _ := s.Get("k")
	v.Data[0] = 'X'
	kvs := s.Range("", "", 0)
	kvs[0].Data[1] = 'Y'
	if v, _ := s.Get("k"); string(v.Data) != "value" {
		t.Fatalf("store value changed through a returned slice: %q", v.Data)
	}
}

func TestStoreApplyEmptyEntry(t *testing.T) {
	s := NewStore()
	res, err := s.Apply(5, nil)
	if res != nil || err != nil || s.AppliedIndex() != 5 || s.Len() != 0 {
		t.Fatalf("Apply(5, nil) = %v, %v; applied %d", res, err, s.AppliedIndex())
	}
}

func TestStoreApplyBadCommandSkipsEntry(t *testing.T) {
	s := NewStore()
	mustApply(t, s, 1, EncodePut("k", []byte("v")))
	before := s.Digest()
	res, err := s.Apply(2, []byte{9, 9, 9})
	if !errors.Is(err, ErrBadCommand) || res != nil {
		t.Fatalf("Apply(garbage) = %v, %v; want ErrBadCommand", res, err)
	}
	if s.AppliedIndex() != 2 || s.Digest() != before {
		t.Fatalf("bad command changed state: applied %d", s.AppliedIndex())
	}
	mustApply(t, s, 3, EncodePut("k2", nil)) // and the log goes on
}

func TestStoreApplyStaleIndex(t *testing.T) {
	s := NewStore()
	mustApply(t, s, 5, EncodePut("k", []byte("v")))
	for _, index := range []uint64{0, 4, 5} {
		res, err := s.Apply(index, EncodePut("k", []byte("other")))
		if !errors.Is(err, ErrStaleIndex) || res != nil {
			t.Fatalf("Apply(%d) = %v, %v; want ErrStaleIndex", index, res, err)
		}
	}
	if v, _ := s.Get("k"); string(v.Data) != "v" || s.AppliedIndex() != 5 {
		t.Fatalf("stale apply changed state: %q, applied %d", v.Data, s.AppliedIndex())
	}
}

func keysOf(kvs []KV) []string {
	keys := []string{}
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	return keys
}

func TestStoreRangeAndPrefix(t *testing.T) {
	s := NewStore()
	for i, k := range []string{"b/2", "a", "b/1", "b", "c", "b/3", "b0", "\xff", "\xff\xff"} {
		mustApply(t, s, uint64(i+1), EncodePut(k, []byte(k)))
	}
	all := []string{"a", "b", "b/1", "b/2", "b/3", "b0", "c", "\xff", "\xff\xff"}
	ranges := []struct {
		start, end string
		limit      int
		want       []string
	}{
		{"", "", 0, all},
		{"", "", -1, all},
		{"", "", 2, []string{"a", "b"}},
		{"b/", "b0", 0, []string{"b/1", "b/2", "b/3"}},
		{"b/2", "", 3, []string{"b/2", "b/3", "b0"}},
		{"a", "a", 0, []string{}},
		{"c", "a", 0, []string{}},
		{"d", "", 0, []string{"\xff", "\xff\xff"}},
	}
	for _, tc := range ranges {
		if got := keysOf(s.Range(tc.start, tc.end, tc.limit)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Range(%q, %q, %d) = %q, want %q", tc.start, tc.end, tc.limit, got, tc.want)
		}
	}
	prefixes := []struct {
		prefix string
		limit  int
		want   []string
	}{
		{"", 0, all},
		{"b/", 0, []string{"b/1", "b/2", "b/3"}},
		{"b", 0, []string{"b", "b/1", "b/2", "b/3", "b0"}},
		{"b", 2, []string{"b", "b/1"}},
		{"\xff", 0, []string{"\xff", "\xff\xff"}},
		{"z", 0, []string{}},
	}
	for _, tc := range prefixes {
		if got := keysOf(s.Prefix(tc.prefix, tc.limit)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Prefix(%q, %d) = %q, want %q", tc.prefix, tc.limit, got, tc.want)
		}
	}
	kv := s.Range("b/1", "", 1)[0]
	if string(kv.Data) != "b/1" || kv.CreateIndex != 3 || kv.ModIndex != 3 {
		t.Fatalf("Range value %+v", kv)
	}
}

func TestPrefixEnd(t *testing.T) {
	for prefix, want := range map[string]string{
		"":          "",
		"a":         "b",
		"a/":        "a0",
		"a\xff":     "b",
		"a\xff\xff": "b",
		"\xff":      "",
		"\xff\xff":  "",
		"ab\xfe":    "ab\xff",
	} {
		if got := PrefixEnd(prefix); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func TestStoreDigest(t *testing.T) {
	a, b := NewStore(), NewStore()
	if a.Digest() != b.Digest() {
		t.Fatal("empty stores differ")
	}
	// Same content reached through different histories: equal digests.
	mustApply(t, a, 1, EncodePut("k", []byte("v")))
	mustApply(t, b, 1, EncodePut("k", []byte("old")))
	mustApply(t, b, 2, EncodePut("gone", nil))
	mustApply(t, b, 3, EncodeDelete("gone"))
	mustApply(t, b, 4, EncodePut("k", []byte("v")))
	if a.Digest() != b.Digest() {
		t.Fatal("stores with equal content differ")
	}
	mustApply(t, b, 5, EncodePut("k", []byte("w")))
	if a.Digest() == b.Digest() {
		t.Fatal("stores with different values have the same digest")
	}
	// Length prefixes keep key/value boundaries apart.
	c, d := NewStore(), NewStore()
	mustApply(t, c, 1, EncodePut("ab", []byte("c")))
	mustApply(t, d, 1, EncodePut("a", []byte("bc")))
	if c.Digest() == d.Digest() {
		t.Fatal(`("ab","c") and ("a","bc") have the same digest`)
	}
}

// TestStoreConcurrentReads runs Apply on one goroutine, as the node does,
// against readers, snapshots and digests on others. Each put stores its own
// index as the value, so a reader that saw a half-applied entry would find a
// value that disagrees with its ModIndex. Run with -race.
func TestStoreConcurrentReads(t *testing.T) {
	const entries = 3000
	s := NewStore()
	var done atomic.Bool
	var wg sync.WaitGroup
	check := func(kv KV) error {
		if string(kv.Data) != strconv.FormatUint(kv.ModIndex, 10) || kv.CreateIndex > kv.ModIndex {
			return fmt.Errorf("half-applied %q: %+v", kv.Key, kv.Value)
		}
		return nil
	}
	errc := make(chan error, 8)
	reader := func(read func() error) {
		defer wg.Done()
		for !done.Load() {
			if err := read(); err != nil {
				errc <- err
				return
			}
		}
	}
	wg.Add(4)
	go reader(func() error {
		key := "k" + strconv.Itoa(int(s.AppliedIndex()%16))
		v, ok := s.Get(key)
		if !ok {
			return nil
		}
		// The applied index only grows, so it covers any value read before.
		if applied := s.AppliedIndex(); v.ModIndex > applied {
			return fmt.Errorf("read %q at mod index %d beyond applied index %d", key, v.ModIndex, applied)
		}
		return check(KV{Key: key, Value: v})
	})
	go reader(func() error {
		for _, kv := range s.Prefix("k", 0) {
			if err := check(kv); err != nil {
				return err
			}
		}
		return nil
	})
	go reader(func() error {
		data, err := s.Snapshot()
		if err != nil {
			return err
		}
		r := NewStore()
		if err := r.Restore(data); err != nil {
			return err
		}
		for _, kv := range r.Range("", "", 0) {
			if err := check(kv); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
		return nil
	})
	go reader(func() error { _ = s.Digest(); return nil })

	for i := uint64(1); i <= entries; i++ {
		key := "k" + strconv.Itoa(int(i%16))
		var data []byte
		if i%7 == 0 {
			data = EncodeDelete(key)
		} else {
			data = EncodePut(key, []byte(strconv.FormatUint(i, 10)))
		}
		if _, err := s.Apply(i, data); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
