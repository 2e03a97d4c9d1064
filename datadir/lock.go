package datadir

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Lock takes an exclusive flock on dir/LOCK (creating dir if needed) so that
// two processes cannot use one data directory at once. It fails at once
// with ErrLocked, naming the directory and the holder's pid, if another
// process holds it; a second Lock in the same process fails too (flock
// locks belong to open files, not processes). The kernel drops the lock
// when the process dies, so a crash never leaves a stale lock. unlock
// releases it and is idempotent.
func Lock(dir string) (unlock func() error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datadir: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datadir: open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := readHolder(f)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use by another process%s", ErrLocked, dir, holder)
		}
		return nil, fmt.Errorf("datadir: lock %s: %w", path, err)
	}
	// Record our pid for the error message of the next would-be opener.
	// It is informational only: the flock is what excludes.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			err = errors.Join(unix.Flock(int(f.Fd()), unix.LOCK_UN), f.Close())
			if err != nil {
				err = fmt.Errorf("datadir: unlock %s: %w", dir, err)
			}
		})
		return err
	}, nil
}

// readHolder returns " (pid N)" from the lock file, or "" if unknown.
func readHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}
