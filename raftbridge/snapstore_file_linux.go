package raftbridge

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing [off, off+n) of f to
// disk without waiting.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// dropBehind waits for [off, off+n) of f to be on disk and drops it from
// the page cache. Advisory only: the final fsync is what makes data
// durable.
func dropBehind(f *os.File, off, n int64) {
	fd := int(f.Fd())
	if unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER) == nil {
		_ = unix.Fadvise(fd, off, n, unix.FADV_DONTNEED)
	}
}
