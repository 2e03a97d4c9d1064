package datadir

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFile writes data to dir/name atomically and durably: a temporary
// file is written and fsynced, then moved into place, then the directory is
// fsynced so the new name survives a crash. With replace false the move is
// a hard link, which fails (fs.ErrExist) if name already exists, so two
// creators cannot both succeed; with replace true it is a rename.
func writeFile(dir, name string, data []byte, replace bool) error {
	f, err := os.CreateTemp(dir, name+".*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link, or if anything failed
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("datadir: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("datadir: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("datadir: close %s: %w", tmp, err)
	}
	final := filepath.Join(dir, name)
	if replace {
		err = os.Rename(tmp, final)
	} else {
		err = os.Link(tmp, final)
	}
	if err != nil {
		return fmt.Errorf("datadir: install %s: %w", final, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("datadir: fsync %s: %w", dir, err)
	}
	return nil
}
