package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// A node snapshot's data is the membership image and the proposal sessions
// table, followed by the state machine's own snapshot:
//
//	magic "RBSN" | version(2) | image length (uint32 BE) | image (JSON)
//	    | sessions length (uint32 BE) | sessions (JSON) | state machine bytes
//
// Version 1 (written before proposal sessions existed) has no sessions
// section; it is still read, with an empty sessions table.
//
// Keeping membership inside the snapshot is what makes tombstones survive
// log compaction; keeping the sessions table is what keeps a proposal
// applied at most once across compaction and restarts.
var snapMagic = [4]byte{'R', 'B', 'S', 'N'}

const (
	snapVersion1 = 1
	snapVersion  = 2
)

var errBadSnapshot = errors.New("node: malformed snapshot data")

// snapshotImage is the decoded node part of a snapshot.
type snapshotImage struct {
	members  membershipImage
	sessions []sessionsImage
}

func encodeSnapshot(img snapshotImage, sm []byte) ([]byte, error) {
	meta, err := json.Marshal(img.members)
	if err != nil {
		return nil, fmt.Errorf("node: encode membership: %w", err)
	}
	sess, err := json.Marshal(img.sessions)
	if err != nil {
		return nil, fmt.Errorf("node: encode sessions: %w", err)
	}
	out := make([]byte, 0, 13+len(meta)+len(sess)+len(sm))
	out = append(out, snapMagic[:]...)
	out = append(out, snapVersion)
	out = binary.BigEndian.AppendUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(sess)))
	out = append(out, sess...)
	return append(out, sm...), nil
}

func decodeSnapshot(data []byte) (snapshotImage, []byte, error) {
	var img snapshotImage
	if len(data) < 9 || [4]byte(data[:4]) != snapMagic {
		return img, nil, fmt.Errorf("%w: bad header", errBadSnapshot)
	}
	version := data[4]
	if version != snapVersion1 && version != snapVersion {
		return img, nil, fmt.Errorf("%w: unsupported version %d", errBadSnapshot, version)
	}
	meta, rest, err := section(data[5:], "membership")
	if err != nil {
		return img, nil, err
	}
	if err := json.Unmarshal(meta, &img.members); err != nil {
		return img, nil, fmt.Errorf("%w: membership: %v", errBadSnapshot, err)
	}
	if version == snapVersion1 {
		return img, rest, nil
	}
	sess, rest, err := section(rest, "sessions")
	if err != nil {
		return img, nil, err
	}
	if err := json.Unmarshal(sess, &img.sessions); err != nil {
		return img, nil, fmt.Errorf("%w: sessions: %v", errBadSnapshot, err)
	}
	return img, rest, nil
}

// section splits a length-prefixed section off b.
func section(b []byte, what string) (body, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: %s length missing", errBadSnapshot, what)
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, fmt.Errorf("%w: %s length %d exceeds %d bytes", errBadSnapshot, what, n, len(b)-4)
	}
	return b[4 : 4+n], b[4+n:], nil
}
