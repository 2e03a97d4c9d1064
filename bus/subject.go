package bus

// DefaultPrefix is the subject prefix used when none is configured.
//
// The subject layout (see the package documentation, Addressing) is part of
// the contract: NATS permissions are written against it (raftbus
// nats-config). Its codec, and the frame codec, are internal to raftbus:
// a Bus implementation built outside this module needs neither, since the
// layer above only sees payloads and the identities of a [Delivery].
const DefaultPrefix = "raftbus"
