package raftbridge

import "github.com/google/uuid"

// Member is the one membership record of raftbus: what the directory
// records, what a ConfChange's Context announces, and what the reference
// node (node.Member), the membership stream (membership.Member), the CLI
// and /status show. Its JSON form (the field tags) is that of the
// membership stream's records and of the reference node's snapshots and
// ConfChange contexts; the kit's own formats ([EncodeConfContext],
// [MemDirectory.Save]) carry only ID, Name, Incarnation and PublicKey.
type Member struct {
	// ID is the Raft ID.
	ID ID `json:"id"`
	// Name is a human-readable name for logs and tools. Optional.
	Name string `json:"name,omitempty"`
	// Incarnation is the UUID of the data directory the member runs from
	// (package datadir creates it, never reused).
	Incarnation uuid.UUID `json:"incarnation"`
	// ClientURL is where the member serves clients, if it does (the
	// reference node's HTTP API). Optional; not part of the kit's formats.
	ClientURL string `json:"client_url,omitempty"`
	// Learner marks a member that receives the log but does not vote.
	// Not part of the kit's formats: raft's configuration says it there.
	Learner bool `json:"learner,omitempty"`
	// PublicKey is the incarnation's nkey public key ("U..."; datadir
	// creates it), which the per-node NATS user of `raftbus nats-config`
	// authenticates and membership records are verified against.
	// Optional: empty when the cluster does not use keys.
	PublicKey string `json:"public_key,omitempty"`
	// AutoPromote marks a learner the reference node's leader promotes by
	// itself once its log is close to the leader's (`member add --learner
	// --promote-when-caught-up`); cleared by the promotion. Not part of the
	// kit's formats.
	AutoPromote bool `json:"auto_promote,omitempty"`
}
