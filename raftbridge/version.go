package raftbridge

import "github.com/raftbus/raftbus/internal/wire"

// Envelope versions this build speaks (see Wire format in the package
// documentation). A received envelope whose version is outside
// [MinVersion, MaxVersion] is dropped with reason "version"; the bridge
// always writes MaxVersion. Nodes of different builds interoperate when
// their ranges overlap at the version the sender writes.
const (
	MinVersion = wire.MinVersion
	MaxVersion = wire.MaxVersion
)
