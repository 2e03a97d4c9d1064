package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// A node snapshot's data is the membership image followed by the state
// machine's own snapshot:
//
//	magic "RBSN" | version(1) | image length (uint32 BE) | image (JSON) | state machine bytes
//
// Keeping membership inside the snapshot is what makes tombstones survive
// log compaction.
var snapMagic = [4]byte{'R', 'B', 'S', 'N'}

const snapVersion = 1

var errBadSnapshot = errors.New("node: malformed snapshot data")

func encodeSnapshot(img membershipImage, sm []byte) ([]byte, error) {
	meta, err := json.Marshal(img)
	if err != nil {
		return nil, fmt.Errorf("node: encode membership: %w", err)
	}
	out := make([]byte, 0, 9+len(meta)+len(sm))
	out = append(out, snapMagic[:]...)
	out = append(out, snapVersion)
	out = binary.BigEndian.AppendUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	return append(out, sm...), nil
}

func decodeSnapshot(data []byte) (membershipImage, []byte, error) {
	var img membershipImage
	if len(data) < 9 || [4]byte(data[:4]) != snapMagic {
		return img, nil, fmt.Errorf("%w: bad header", errBadSnapshot)
	}
	if data[4] != snapVersion {
		return img, nil, fmt.Errorf("%w: unsupported version %d", errBadSnapshot, data[4])
	}
	n := binary.BigEndian.Uint32(data[5:9])
	if uint64(n) > uint64(len(data)-9) {
		return img, nil, fmt.Errorf("%w: membership length %d exceeds %d bytes", errBadSnapshot, n, len(data)-9)
	}
	if err := json.Unmarshal(data[9:9+n], &img); err != nil {
		return img, nil, fmt.Errorf("%w: membership: %v", errBadSnapshot, err)
	}
	return img, data[9+n:], nil
}
