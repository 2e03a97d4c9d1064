package server

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/raftstore"
)

// Errors of the start-up guard. Callers match them with errors.Is.
var (
	// ErrLostLog refuses a node whose first start succeeded (its data
	// directory holds a STARTED record) but whose Raft state is empty: its
	// log was lost, and a member that may have voted or acknowledged
	// entries must not come back as itself with an empty log. Neither
	// Joining nor Bootstrap overrides it.
	ErrLostLog = errors.New("server: Raft log lost")
	// ErrNeverStarted refuses a node whose first start has not succeeded
	// yet when the caller says neither how to bootstrap it nor that it
	// joins.
	ErrNeverStarted = errors.New("server: first start not completed")
)

// firstStartPoll is how often a first start checks whether the node's Raft
// state has become durable. The first Save of a bootstrap is immediate; a
// joiner's comes with the leader's first message.
const firstStartPoll = 20 * time.Millisecond

// checkRaftState applies the rule of the data directory: empty Raft state
// is accepted only while the identity's first start has not succeeded, and
// then only to bootstrap or to join. It reports whether this is such a
// first start (the STARTED record is then written by recordFirstStart once
// the Raft state is durable). A non-empty state without the record (a
// crash between the first Save and the record, or a directory of an older
// raftbus) gets the record now.
func (s *Server) checkRaftState() (firstStart bool, err error) {
	dir, id := s.cfg.DataDir, s.identity
	empty, err := storageEmpty(s.store)
	if err != nil {
		return false, fmt.Errorf("server: read Raft state of %s: %w", dir, err)
	}
	rec, err := datadir.LoadStarted(dir)
	started := err == nil
	if err != nil && !errors.Is(err, datadir.ErrNotStarted) {
		return false, err
	}
	if started && rec.Incarnation != id.Incarnation {
		return false, fmt.Errorf("server: %s holds a %s record of incarnation %s: it was copied from another data directory; remove it only if you know this directory's Raft state is intact",
			id, datadir.StartedFile, rec.Incarnation)
	}
	switch {
	case empty && started:
		return false, fmt.Errorf("%w: %s, and it first started successfully at %s, but its Raft state in %s is empty: its Raft log was lost. "+
			"A member that may have voted or acknowledged writes must not return under the same Raft ID with an empty log "+
			"(it could elect a stale leader and lose acknowledged writes), with --join or without. "+
			"Remove it from the cluster (raftbus member remove %s), wipe %s and add it again as a new member (raftbus node --join, then raftbus member add %s)",
			ErrLostLog, id, rec.At.Format(time.RFC3339), datadir.RaftDir(dir), hexName(id), dir, id.Name)
	case empty && len(s.cfg.Bootstrap) == 0 && !s.cfg.Joining:
		return false, fmt.Errorf("%w: %s, but it has no Raft state and has not completed a first start: start it to bootstrap a new cluster or to join one",
			ErrNeverStarted, id)
	case empty:
		return true, nil
	case !started:
		if err := datadir.MarkStarted(dir, id); err != nil {
			return false, fmt.Errorf("server: record the first start of %s: %w", dir, err)
		}
	}
	return false, nil
}

// hexName names the member for `raftbus member remove`: its name if it has
// one, else its Raft ID.
func hexName(id *datadir.Identity) string {
	if id.Name != "" {
		return id.Name
	}
	return raftbridge.ID(id.RaftID).String()
}

// recordFirstStart writes the STARTED record once the node's Raft state is
// durable (the Ready loop's Save returns after the fsync, and the store
// shows the state only after its batch committed), so that from then on
// empty Raft state is refused as a lost log. It runs until that happens or
// the server stops.
func (s *Server) recordFirstStart() {
	defer close(s.firstDone)
	t := time.NewTicker(firstStartPoll)
	defer t.Stop()
	for {
		select {
		case <-s.firstStop:
			return
		case <-t.C:
		}
		empty, err := s.anyGroupEmpty()
		if err != nil {
			s.log.Error("cannot read Raft state to record the first start", "err", err)
			return
		}
		if empty {
			continue
		}
		if err := datadir.MarkStarted(s.cfg.DataDir, s.identity); err != nil {
			// The node runs on; a restart records it (non-empty state
			// without the record is recorded at start).
			s.log.Error("cannot record the first start", "err", err)
			return
		}
		s.log.Info("first start complete: Raft state is durable", "record", datadir.StartedFile)
		return
	}
}

// storageEmpty reports whether Raft storage holds nothing at all.
func storageEmpty(st *raftstore.Store) (bool, error) {
	hs, _, err := st.InitialState()
	if err != nil {
		return false, err
	}
	last, err := st.LastIndex()
	if err != nil {
		return false, err
	}
	if !raft.IsEmptyHardState(hs) || last > 0 {
		return false, nil // without reading a possibly large snapshot
	}
	snap, err := st.Snapshot()
	if err != nil {
		return false, err
	}
	return raft.IsEmptySnap(snap), nil
}
