package raftbridge

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// ID is a Raft ID as raftbus prints and stores it everywhere: 16 hex
// digits, and in JSON a string of them, because 64-bit numbers do not
// survive JSON readers that use doubles. Its zero value means "no ID".
type ID uint64

// String formats the ID as 16 hex digits (zero included).
func (id ID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// MarshalJSON writes the ID as a hex string, and 0 (no ID, as in a
// rejection of a request that names none) as "".
func (id ID) MarshalJSON() ([]byte, error) {
	if id == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(id.String())
}

// UnmarshalJSON reads what MarshalJSON writes ("" is 0; leading zeros are
// optional). It never panics.
func (id *ID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("raft ID: %w", err)
	}
	if s == "" {
		*id = 0
		return nil
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return fmt.Errorf("raft ID %q is not hex", s)
	}
	*id = ID(v)
	return nil
}

// ParseID parses a non-zero Raft ID given in hex, as [ID.String] prints it
// (leading zeros optional).
func ParseID(s string) (ID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("bad raft ID %q: expecting a non-zero hex number", s)
	}
	return ID(v), nil
}
