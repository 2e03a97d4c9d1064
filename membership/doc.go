// Package membership carries a raftbus cluster's membership changes on a
// JetStream stream: operators' requests, nodes' announcements, the outcome
// of every request and the record of every committed change.
//
// # The stream
//
// One stream per cluster, named <prefix>-members-<clusterID> (dots of the
// prefix become underscores), file storage, replicas configurable (3 on a
// three-server NATS cluster, 1 on a single server), deletes and purges
// denied: it is an audit log. Its subjects, all under
// <prefix>.<clusterID>.members:
//
//	.announce.<incarnation>  Announce: an incarnation came up (name, Raft ID
//	                         if it has one, protocol, HTTP address, data
//	                         dir, public key); written by that incarnation
//	.request                 Request: add, add-learner, promote or remove,
//	                         with a request ID and the version it expects;
//	                         written only by the admin (`raftbus member`)
//	.outcome.<requestID>.<incarnation>
//	                         Outcome: applied at Raft index X, or rejected
//	                         with a code and a reason; written by the leader
//	                         that settled it
//	.committed.<incarnation> Committed: one membership change that took
//	                         effect, with its index; written by the leader
//	                         that publishes it. The directory can be rebuilt
//	                         from these alone (Rebuild)
//
// # Raft groups
//
// A process may host many Raft groups: one host (one incarnation, one
// key) is a member of each of them under a Raft ID of that group. Every
// group has its own membership (members, Raft IDs, NextID, tombstones,
// requests, outcomes, committed records, history) on the cluster's one
// stream, and one Manager per group (StreamConfig.Group, ManagerConfig).
// Group 0, the default, uses the subjects above, unchanged. Group g > 0
// puts its records under one more token, g<g> in decimal without leading
// zeros (GroupToken):
//
//	.g<g>.request
//	.g<g>.outcome.<requestID>.<incarnation>
//	.g<g>.committed.<incarnation>
//
// so that NATS permissions name every group's records of one kind and
// writer as members.*.<kind>.<incarnation>. Announcements describe the
// host, not a group: they stay on .announce.<incarnation>, and every
// group's readers read them there. A group's readers receive only its
// own records and the announcements (JetStream filter subjects): another
// group's records are neither read nor reported. A record of group g > 0
// names g in its signed body ("group"; absent for group 0 and for
// announcements, so group 0's records keep their bytes), and a record
// whose body and subject disagree on the group is rejected: a record
// cannot be replayed, even by its own signer, into another group.
// Message IDs are scoped to the group as well. A removal tombstones the
// Raft ID and the incarnation in its group only; the host's announcements
// and its other groups are unaffected.
//
// # Authenticated records
//
// Every record a node writes goes on a subject ending in its own
// incarnation, so NATS permissions (per-node users) authenticate the
// writer, and is signed with the incarnation's nkey (datadir.LoadKey):
// header Raftbus-Signer holds the public key, Raftbus-Sig base64url of the
// ed25519 signature over subject + "\n" + body. Requests carry no node
// signature: only the admin may publish them.
//
// Readers never trust a record for what it says about itself:
//
//   - Stream checks that subject, body and signature agree (Record.Invalid,
//     Record.Source, Record.Signer); a record that does not is still
//     delivered, marked, and never fails a read.
//   - Directory accepts an announcement signed by the key it carries (the
//     key of a member must equal its member record's); an outcome signed by
//     a member's recorded key; a committed change once a majority of the
//     voters of the membership it follows attested it, each signing its
//     own record with its recorded key (every voter writes each change it
//     applied, from replicated state: attest.go, quorum.go). Member
//     records carry public_key, taken by `member add` from the verified
//     announcement and replicated through Raft, so every member knows every
//     member's key. The first committed changes (Raft indexes 1, 2, ... of
//     the bootstrap, one signer) are accepted when their signer is a voter
//     they add, and so is a repaired stream's baseline (OpBaseline: the
//     whole membership, first committed record of the stream) when its
//     signer is a voter it names: trust on first use of the stream.
//   - Anything unsigned, badly signed, unauthorised or malformed is
//     skipped, listed in Directory.Rejected with a reason (Reject*
//     constants) and counted; `raftbus member history` shows it as
//     rejected. It never stops a command or a node.
//   - Message IDs of signed records are derived from a signature, so a
//     writer that is not the signer cannot pre-empt a record through the
//     stream's de-duplication.
//
// Limits: a member whose key is compromised can write anything that
// member could (Byzantine, outside Raft's model). A committed change
// published only by a leader that was not yet a voter of the membership
// before it (its own addition, committed by a leader that crashed before
// publishing) cannot be verified from the stream and is rejected. Trust
// on first use is per Raft group: node credentials let every host write
// its own records of any group (members.*.committed.<incarnation>), so a
// host that writes a bootstrap run for a group before that group's first
// leader publishes one becomes that group's first member in the stream's
// eyes (not in Raft's); a group's first leader must publish its bootstrap
// (its manager does, when it first leads) before other hosts can know of
// the group.
//
// Every record is JSON with a format version ("v"); a reader refuses a
// newer version instead of misreading it. Raft IDs travel as 16-digit hex
// strings.
//
// # Rules
//
//  1. The committed Raft ConfChange is the truth; the stream is how everyone
//     learns it and how operators drive it.
//  2. Only the current leader turns requests into proposals (Manager), and
//     every request is decided exactly once, as a replicated fact: applied
//     or rejected, the decision goes through Raft (idempotent by request
//     ID) before its outcome is published, and a decided request is never
//     evaluated again. Rejections the leader decides (not ready, conflict,
//     invalid, a leader that cannot hand over before its removal) are
//     system entries in the log like the changes Raft rejects when
//     applied. The replicated state records the highest stream sequence
//     decided; a new leader publishes what the stream lacks of the
//     replicated decisions (committed changes and outcomes) and reads
//     requests after that sequence. A request that cannot succeed becomes
//     a rejection with a reason, never an error that stops the queue, and
//     nothing waits on one request while others queue: a promote waits
//     for its learner (PromoteWait) only while no other request is
//     pending, then it is rejected as not_ready, which the operator can
//     retry with a new request.
//  3. Requests carry Nats-Msg-Id (their ID) and are published with an
//     expected last sequence on the request subject: of two operators who
//     saw the same state, the second gets ErrConflict and nothing is
//     recorded. A request also names the membership version it was made
//     against; the leader rejects it with code "conflict" if membership
//     changed meanwhile.
//  4. Raft IDs are allocated by the leader above every ID ever used,
//     tombstones included; removed IDs and incarnations are tombstoned in
//     replicated state (they survive snapshots) and dropped by the bridge
//     forever.
//  5. Membership is never inferred from traffic.
//  6. A node learns that it was removed from its log or from a verified
//     committed record of the stream naming its exact Raft ID and
//     incarnation, never from an unverified record, a peer's drop or
//     silence, and stops itself.
//  7. The cluster records which stream it is bound to (name and creation
//     time) in replicated state. A missing or recreated stream stops
//     membership operations with a clear error (Manager.Problem, the
//     node's /status); routing continues from the replicated directory. An
//     empty stream is never read as "no members" (ErrEmpty). `raftbus
//     member stream repair` (the admin) creates the stream if it is
//     missing and records a repair request (OpRepairStream) on it; the
//     leader then rebinds the cluster to that stream through Raft, starts
//     it with a baseline and republishes every decided outcome. The
//     outcome of an applied change is published once a quorum attested
//     the change (or after a bound), so the next command sees it.
//
// # Join flow
//
// A new node creates its incarnation (and key), publishes a signed
// Announce and waits for a verified Committed record naming its
// incarnation; `raftbus member add NAME` finds the newest verified
// announcement under NAME that is neither a member nor tombstoned and
// submits the request with the announced public key.
package membership
