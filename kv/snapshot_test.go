package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// populate fills s with n keys whose values are valueSize seeded random
// bytes, overwriting and deleting some on the way so that create and mod
// indexes differ. It returns the next free index.
func populate(t testing.TB, s *Store, n, valueSize int) uint64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	index := s.AppliedIndex() + 1
	value := make([]byte, valueSize)
	for i := range n {
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		key := fmt.Sprintf("key/%08d", i)
		mustApply(t, s, index, EncodePut(key, value))
		index++
		switch i % 10 {
		case 3: // overwrite: mod index > create index
			mustApply(t, s, index, EncodePut(key, value[:valueSize/2]))
			index++
		case 7: // delete and leave a gap in the index sequence
			mustApply(t, s, index+1, EncodeDelete(key))
			index += 2
		}
	}
	return index
}

func assertSameState(t *testing.T, got, want *Store) {
	t.Helper()
	if got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("applied index %d, want %d", got.AppliedIndex(), want.AppliedIndex())
	}
	if got.Digest() != want.Digest() {
		t.Fatal("digests differ")
	}
	// Digest ignores create/mod indexes; the snapshot must keep them.
	if g, w := got.Range("", "", 0), want.Range("", "", 0); !reflect.DeepEqual(g, w) {
		t.Fatalf("contents differ: %d vs %d keys", len(g), len(w))
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	tests := []struct {
		name         string
		keys, valLen int
	}{
		{"empty", 0, 0},
		{"small", 50, 10},
		{"values larger than the read buffer", 6, 3 * snapshotChunk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := NewStore()
			next := populate(t, src, tc.keys, tc.valLen)
			data, err := src.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if want := snapshotHeaderSize + int(src.encoded) + snapshotTrailerSize; len(data) != want || cap(data) != want {
				t.Fatalf("snapshot len %d cap %d, want exactly %d", len(data), cap(data), want)
			}
			var streamed bytes.Buffer
			if err := src.WriteSnapshot(&streamed); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(streamed.Bytes(), data) {
				t.Fatal("WriteSnapshot and Snapshot produced different bytes")
			}

			restored := NewStore()
			mustApply(t, restored, 1, EncodePut("stale", nil)) // replaced wholesale
			if err := restored.Restore(data); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			assertSameState(t, restored, src)

			for name, r := range map[string]io.Reader{
				"bytes":    bytes.NewReader(data),
				"one byte": iotest.OneByteReader(bytes.NewReader(data)),
				"half":     iotest.HalfReader(bytes.NewReader(data)),
			} {
				streamedStore := NewStore()
				if err := streamedStore.RestoreFrom(r); err != nil {
					t.Fatalf("RestoreFrom(%s): %v", name, err)
				}
				assertSameState(t, streamedStore, src)
			}

			// The log continues after the snapshot's index, not before.
			if _, err := restored.Apply(src.AppliedIndex(), EncodePut("x", nil)); !errors.Is(err, ErrStaleIndex) {
				t.Fatalf("Apply at the snapshot index: %v, want ErrStaleIndex", err)
			}
			mustApply(t, restored, next, EncodePut("x", nil))
			mustApply(t, src, next, EncodePut("x", nil))
			assertSameState(t, restored, src)
		})
	}
}

// withCRC appends the snapshot checksum to body.
func withCRC(body []byte) []byte {
	return binary.BigEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
}

// rawSnapshot builds a snapshot from a header and hand-made records, with a
// correct checksum, so that tests reach the checks behind the checksum.
func rawSnapshot(magic string, version byte, applied, count uint64, records ...[]byte) []byte {
	b := append([]byte(magic), version)
	b = binary.BigEndian.AppendUint64(b, applied)
	b = binary.BigEndian.AppendUint64(b, count)
	for _, r := range records {
		b = append(b, r...)
	}
	return withCRC(b)
}

func record(key, value string, create, mod uint64) []byte {
	return appendRecord(nil, entry{key: key, value: []byte(value), createIndex: create, modIndex: mod})
}

// restoreBoth runs Restore and RestoreFrom on fresh-but-nonempty stores and
// checks that a failure left each store as it was.
func restoreBoth(t *testing.T, data []byte) (errSlice, errStream error) {
	t.Helper()
	for i, restore := range []func(*Store) error{
		func(s *Store) error { return s.Restore(data) },
		func(s *Store) error { return s.RestoreFrom(bytes.NewReader(data)) },
	} {
		s := NewStore()
		mustApply(t, s, 3, EncodePut("keep", []byte("me")))
		before := s.Digest()
		err := restore(s)
		if err != nil && (s.Digest() != before || s.AppliedIndex() != 3) {
			t.Fatalf("failed restore changed the state: %v", err)
		}
		if i == 0 {
			errSlice = err
		} else {
			errStream = err
		}
	}
	return errSlice, errStream
}

func TestRestoreRejectsMalformed(t *testing.T) {
	valid := rawSnapshot(snapshotMagic, snapshotVersion, 9, 2, record("a", "1", 1, 2), record("b", "2", 3, 9))
	tests := []struct {
		name string
		data []byte
		why  string // in both errors
	}{
		{"empty", nil, ""},
		{"bad magic", rawSnapshot("RBKX", snapshotVersion, 0, 0), "bad magic"},
		{"version 2", rawSnapshot(snapshotMagic, 2, 0, 0), "unsupported version 2"},
		{"count beyond records", rawSnapshot(snapshotMagic, snapshotVersion, 9, 3, record("a", "1", 1, 2)), "record 1"},
		{"keys not ascending", rawSnapshot(snapshotMagic, snapshotVersion, 9, 2, record("b", "1", 1, 2), record("a", "2", 1, 2)), "not after"},
		{"duplicate key", rawSnapshot(snapshotMagic, snapshotVersion, 9, 2, record("a", "1", 1, 2), record("a", "2", 1, 2)), "not after"},
		{"empty key", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1, record("", "1", 1, 2)), "empty key"},
		{"create index 0", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1, record("a", "1", 0, 2)), "create index 0"},
		{"create after mod", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1, record("a", "1", 3, 2)), "create index 3"},
		{"mod after applied", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1, record("a", "1", 1, 10)), "applied index 9"},
		{"value length beyond data", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1,
			append(binary.AppendUvarint([]byte{1, 'a'}, 1<<40), "short"...)), "value"},
		{"bad varint", rawSnapshot(snapshotMagic, snapshotVersion, 9, 1, bytes.Repeat([]byte{0xff}, 12)), "key length"},
		{"trailing bytes", append(valid[:len(valid):len(valid)], 0), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errSlice, errStream := restoreBoth(t, tc.data)
			for _, err := range []error{errSlice, errStream} {
				if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tc.why) {
					t.Errorf("got %v, want ErrBadSnapshot mentioning %q", err, tc.why)
				}
			}
		})
	}
	if a, b := restoreBoth(t, valid); a != nil || b != nil {
		t.Fatalf("the valid base case fails: %v / %v", a, b)
	}
}

// TestRestoreDetectsCorruption flips every byte and cuts the snapshot at
// every length: all of it must be refused.
func TestRestoreDetectsCorruption(t *testing.T) {
	s := NewStore()
	populate(t, s, 8, 5)
	data, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x5a
		if a, b := restoreBoth(t, bad); !errors.Is(a, ErrBadSnapshot) || !errors.Is(b, ErrBadSnapshot) {
			t.Fatalf("byte %d flipped: %v / %v", i, a, b)
		}
	}
	for n := range len(data) {
		if a, b := restoreBoth(t, data[:n]); !errors.Is(a, ErrBadSnapshot) || !errors.Is(b, ErrBadSnapshot) {
			t.Fatalf("cut at %d: %v / %v", n, a, b)
		}
	}
}

func TestRestoreFromReaderError(t *testing.T) {
	s := NewStore()
	populate(t, s, 20, 100)
	data, _ := s.Snapshot()
	boom := errors.New("disk on fire")
	for _, cut := range []int{0, 10, snapshotHeaderSize + 3, len(data) - 2} {
		r := io.MultiReader(bytes.NewReader(data[:cut]), iotest.ErrReader(boom))
		err := NewStore().RestoreFrom(r)
		if !errors.Is(err, boom) || errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("cut %d: %v, want the reader's error and not ErrBadSnapshot", cut, err)
		}
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, io.ErrShortWrite
	}
	w.after--
	return len(p), nil
}

func TestWriteSnapshotWriterError(t *testing.T) {
	s := NewStore()
	populate(t, s, 300, 1000) // several chunks
	for after := range 4 {
		if err := s.WriteSnapshot(&failingWriter{after: after}); !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("failing after %d writes: %v", after, err)
		}
	}
}

// FuzzRestore feeds arbitrary bodies to both restore paths, once with a
// correct checksum appended (so the fuzzer reaches the parsing behind it)
// and once as they are. The two paths must agree, never panic, and whatever
// they accept must survive another round trip.
func FuzzRestore(f *testing.F) {
	for _, n := range []int{0, 1, 5} {
		s := NewStore()
		populate(f, s, n, 3)
		data, _ := s.Snapshot()
		f.Add(data[:len(data)-snapshotTrailerSize])
	}
	body := func(data []byte) []byte { return data[:len(data)-snapshotTrailerSize] }
	f.Add(body(rawSnapshot(snapshotMagic, snapshotVersion, 1, 1, record("k", "v", 1, 1))))
	f.Add(body(rawSnapshot(snapshotMagic, snapshotVersion, 9, 1<<62)))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, data := range [][]byte{withCRC(bytes.Clone(body)), body} {
			a, b := NewStore(), NewStore()
			errA, errB := a.Restore(data), b.RestoreFrom(bytes.NewReader(data))
			if (errA == nil) != (errB == nil) {
				t.Fatalf("Restore: %v, RestoreFrom: %v", errA, errB)
			}
			if errA != nil {
				if !errors.Is(errA, ErrBadSnapshot) || !errors.Is(errB, ErrBadSnapshot) {
					t.Fatalf("errors without ErrBadSnapshot: %v / %v", errA, errB)
				}
				continue
			}
			again, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			c := NewStore()
			if err := c.Restore(again); err != nil {
				t.Fatalf("re-snapshot does not restore: %v", err)
			}
			if c.Digest() != b.Digest() || c.AppliedIndex() != b.AppliedIndex() || c.Len() != b.Len() {
				t.Fatal("round trip changed the state")
			}
		}
	})
}

// The benchmark state: about 50 MiB of keys and values, built once.
var benchStates sync.Map // valueSize -> *Store

func benchStore(b *testing.B, valueSize int) *Store {
	if s, ok := benchStates.Load(valueSize); ok {
		return s.(*Store)
	}
	s := NewStore()
	keys := (50 << 20) / (valueSize + len("key/00000000"))
	index := uint64(1)
	value := make([]byte, valueSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range keys {
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		if _, err := s.Apply(index, EncodePut(fmt.Sprintf("key/%08d", i), value)); err != nil {
			b.Fatal(err)
		}
		index++
	}
	benchStates.Store(valueSize, s)
	return s
}

// benchSizes are the value sizes of the 50 MiB states: few large records
// and many small ones (allocations per record dominate the latter).
var benchSizes = []int{1024, 100}

func BenchmarkSnapshot(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("50MiB/value=%dB", size), func(b *testing.B) {
			s := benchStore(b, size)
			data, _ := s.Snapshot()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Snapshot(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWriteSnapshot(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("50MiB/value=%dB", size), func(b *testing.B) {
			s := benchStore(b, size)
			data, _ := s.Snapshot()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.WriteSnapshot(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRestore(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("50MiB/value=%dB", size), func(b *testing.B) {
			data, _ := benchStore(b, size).Snapshot()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := NewStore().Restore(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRestoreFrom(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("50MiB/value=%dB", size), func(b *testing.B) {
			data, _ := benchStore(b, size).Snapshot()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := NewStore().RestoreFrom(bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDigest(b *testing.B) {
	s := benchStore(b, benchSizes[0])
	data, _ := s.Snapshot()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		s.Digest()
	}
}

func BenchmarkApplyPut(b *testing.B) {
	s := NewStore()
	value := bytes.Repeat([]byte("v"), 100)
	cmds := make([][]byte, 1<<16)
	for i := range cmds {
		cmds[i] = EncodePut(fmt.Sprintf("key/%08d", i), value)
	}
	b.ReportAllocs()
	index := uint64(0)
	for b.Loop() {
		index++
		if _, err := s.Apply(index, cmds[index%uint64(len(cmds))]); err != nil {
			b.Fatal(err)
		}
	}
}
