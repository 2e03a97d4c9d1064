package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// File names of the start-up records (see the package documentation).
const (
	// StartedFile records that the node's Raft state was durably
	// initialised: its first start succeeded. From then on, empty Raft
	// state means the log was lost.
	StartedFile = "STARTED"
	// FirstStartFile records how a new identity is to be started the first
	// time (FirstStart), so that a first start that failed is retried the
	// same way.
	FirstStartFile = "FIRST_START"
)

// Errors of the start-up records. Both also match fs.ErrNotExist.
var (
	// ErrNotStarted is returned by LoadStarted when the directory has no
	// STARTED record: the node's first start has not succeeded yet (or the
	// directory was written by a raftbus that did not keep the record).
	ErrNotStarted = errors.New("datadir: first start not recorded")
	// ErrNoFirstStart is returned by LoadFirstStart when the directory
	// holds no FIRST_START record.
	ErrNoFirstStart = errors.New("datadir: no first-start record")
)

// FirstStart says how a new identity starts the first time.
type FirstStart string

// The ways of a first start.
const (
	// FirstStartBootstrap: the identity bootstraps a new cluster in which
	// it is the only member.
	FirstStartBootstrap FirstStart = "bootstrap"
	// FirstStartJoin: the identity joins an existing cluster and receives
	// its Raft state from the leader.
	FirstStartJoin FirstStart = "join"
)

// StartRecord is the content of a start-up record: whose it is and when it
// was written.
type StartRecord struct {
	// RaftID is the identity's Raft ID when the record was written (0 for
	// a joiner that has not been admitted yet).
	RaftID uint64
	// Incarnation is the identity's incarnation.
	Incarnation uuid.UUID
	// At is when the record was written (UTC).
	At time.Time
	// How is set in FIRST_START records only.
	How FirstStart
}

type startJSON struct {
	RaftID      string     `json:"raft_id,omitempty"`
	Incarnation string     `json:"incarnation"`
	At          time.Time  `json:"at"`
	How         FirstStart `json:"how,omitempty"`
}

// MarkStarted records, durably, that id's first start succeeded: call it
// once the node's Raft state is durably non-empty. It is idempotent: an
// existing record of the same incarnation is kept; one of another
// incarnation is an ErrBadFormat (the file was copied from another
// directory).
func MarkStarted(dir string, id *Identity) error {
	rec, err := LoadStarted(dir)
	switch {
	case err == nil:
		return rec.checkOwner(dir, StartedFile, id)
	case !errors.Is(err, ErrNotStarted):
		return err
	}
	return writeRecord(dir, StartedFile, StartRecord{RaftID: id.RaftID, Incarnation: id.Incarnation})
}

// LoadStarted reads the STARTED record of dir. Without one it returns an
// error matching ErrNotStarted and fs.ErrNotExist.
func LoadStarted(dir string) (*StartRecord, error) {
	rec, err := readRecord(dir, StartedFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotStarted, filepath.Join(dir, StartedFile), err)
	}
	return rec, err
}

// RecordFirstStart records, durably, how id is to be started the first
// time. Write it before the first start is attempted, so that a retry after
// a failure (port taken, NATS down, ...) starts the same way. Recording the
// same way again is a no-op; another way is refused.
func RecordFirstStart(dir string, id *Identity, how FirstStart) error {
	if how != FirstStartBootstrap && how != FirstStartJoin {
		return fmt.Errorf("datadir: unknown first start %q", how)
	}
	rec, err := LoadFirstStart(dir)
	switch {
	case err == nil:
		if err := rec.checkOwner(dir, FirstStartFile, id); err != nil {
			return err
		}
		if rec.How != how {
			return fmt.Errorf("datadir: data directory %s was created to %s, not to %s", dir, rec.How, how)
		}
		return nil
	case !errors.Is(err, ErrNoFirstStart):
		return err
	}
	return writeRecord(dir, FirstStartFile, StartRecord{RaftID: id.RaftID, Incarnation: id.Incarnation, How: how})
}

// LoadFirstStart reads the FIRST_START record of dir. Without one it
// returns an error matching ErrNoFirstStart and fs.ErrNotExist.
func LoadFirstStart(dir string) (*StartRecord, error) {
	rec, err := readRecord(dir, FirstStartFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoFirstStart, filepath.Join(dir, FirstStartFile), err)
	}
	if err == nil && rec.How != FirstStartBootstrap && rec.How != FirstStartJoin {
		return nil, fmt.Errorf("%w: %s: unknown first start %q", ErrBadFormat, filepath.Join(dir, FirstStartFile), rec.How)
	}
	return rec, err
}

// checkOwner refuses a record of another incarnation.
func (r *StartRecord) checkOwner(dir, name string, id *Identity) error {
	if r.Incarnation != id.Incarnation {
		return fmt.Errorf("%w: %s belongs to incarnation %s, the directory's identity is incarnation %s",
			ErrBadFormat, filepath.Join(dir, name), r.Incarnation, id.Incarnation)
	}
	return nil
}

func writeRecord(dir, name string, rec StartRecord) error {
	b, err := json.MarshalIndent(startJSON{
		RaftID:      formatRaftID(rec.RaftID),
		Incarnation: rec.Incarnation.String(),
		At:          time.Now().UTC().Truncate(time.Millisecond),
		How:         rec.How,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("datadir: encode %s: %w", name, err)
	}
	// Atomic and durable like the identity: fsynced temp file, rename,
	// directory fsync. A rename (not a link) so that a record left by a
	// crash between link and unlink is simply replaced.
	return writeFile(dir, name, append(b, '\n'), true)
}

func readRecord(dir, name string) (*StartRecord, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("datadir: %w", err)
	}
	var j startJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadFormat, path, err)
	}
	rec := &StartRecord{At: j.At, How: j.How}
	if rec.Incarnation, err = uuid.Parse(j.Incarnation); err != nil {
		return nil, fmt.Errorf("%w: %s: incarnation %q: %v", ErrBadFormat, path, j.Incarnation, err)
	}
	if j.RaftID != "" {
		if rec.RaftID, err = strconv.ParseUint(j.RaftID, 16, 64); err != nil || len(j.RaftID) != 16 || rec.RaftID == 0 {
			return nil, fmt.Errorf("%w: %s: raft_id %q is not a non-zero hex ID", ErrBadFormat, path, j.RaftID)
		}
	}
	return rec, nil
}
