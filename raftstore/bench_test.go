package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/sys/unix"
)

// countingFS counts the fsyncs Pebble issues, to report fsyncs per Save.
type countingFS struct {
	vfs.FS
	syncs *atomic.Int64
}

func (fs countingFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return countingFile{f, fs.syncs}, nil
}

func (fs countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs countingFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.Open(name, opts...))
}

func (fs countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs countingFS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

func (fs countingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

type countingFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f countingFile) Sync() error     { f.syncs.Add(1); return f.File.Sync() }
func (f countingFile) SyncData() error { f.syncs.Add(1); return f.File.SyncData() }
func (f countingFile) SyncTo(n int64) (bool, error) {
	full, err := f.File.SyncTo(n)
	if full {
		f.syncs.Add(1)
	}
	return full, err
}

func benchStore(b *testing.B, opts Options) (*Store, *atomic.Int64) {
	b.Helper()
	syncs := &atomic.Int64{}
	opts.fs = countingFS{vfs.Default, syncs}
	return openT(b, b.TempDir(), opts), syncs
}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// BenchmarkSave measures one Ready's worth of persistence: a hard state and
// n entries of 128 B, as the Ready loop calls it before sending messages.
func BenchmarkSave(b *testing.B) {
	data := payload(128)
	for _, sync := range []bool{true, false} {
		for _, n := range []int{1, 64} {
			name := fmt.Sprintf("entries=%d/sync=%v", n, sync)
			b.Run(name, func(b *testing.B) {
				s, syncs := benchStore(b, Options{NoSync: !sync})
				next := uint64(1)
				b.SetBytes(int64(n * len(data)))
				b.ReportAllocs()
				syncs.Store(0)
				b.ResetTimer()
				for b.Loop() {
					es := make([]*raftpb.Entry, n)
					for i := range es {
						es[i] = &raftpb.Entry{Index: new(next), Term: new(uint64(1)), Data: data}
						next++
					}
					if err := s.Save(hardState(1, 1, next-1), es); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "fsyncs/op")
			})
		}
	}
}

// BenchmarkRawFdatasync is the floor for a synced Save on this disk: append
// 128 B to a plain file and fdatasync it. Compare it with BenchmarkSave in
// the same run; fsync latency on shared disks drifts a lot.
func BenchmarkRawFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := payload(128)
	for b.Loop() {
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEntries reads 64 recent entries (what Raft does to build a
// MsgApp), from the entry cache and, with the cache disabled, from Pebble.
func BenchmarkEntries(b *testing.B) {
	for _, cache := range []int64{0, -1} {
		name := "cached"
		if cache < 0 {
			name = "pebble"
		}
		b.Run(name, func(b *testing.B) {
			s, _ := benchStore(b, Options{NoSync: true, EntryCacheSize: cache})
			data := payload(128)
			const total = 4096
			for i := uint64(1); i <= total; i += 64 {
				es := make([]*raftpb.Entry, 64)
				for j := range es {
					es[j] = &raftpb.Entry{Index: new(i + uint64(j)), Term: new(uint64(1)), Data: data}
				}
				mustSave(b, s, nil, es)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				es, err := s.Entries(total-63, total+1, 1<<20)
				if err != nil || len(es) != 64 {
					b.Fatalf("Entries: %d, %v", len(es), err)
				}
			}
		})
	}
}

// BenchmarkTerm reads the term of a recent entry, as Raft does for every
// MsgApp it builds and receives.
func BenchmarkTerm(b *testing.B) {
	for _, cache := range []int64{0, -1} {
		name := "cached"
		if cache < 0 {
			name = "pebble"
		}
		b.Run(name, func(b *testing.B) {
			s, _ := benchStore(b, Options{NoSync: true, EntryCacheSize: cache})
			mustSave(b, s, nil, ents(1, 1000, 1))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Term(990); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
