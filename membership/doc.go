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
//	                         if it has one, protocol, HTTP address, data dir)
//	.request                 Request: add, add-learner, promote or remove,
//	                         with a request ID and the version it expects
//	.outcome.<requestID>     Outcome: applied at Raft index X, or rejected
//	                         with a code and a reason
//	.committed               Committed: one membership change that took
//	                         effect, with its index; the directory can be
//	                         rebuilt from these alone (Rebuild)
//
// Every record is JSON with a format version ("v"); a reader refuses a
// newer version instead of misreading it. Raft IDs travel as 16-digit hex
// strings.
//
// # Rules
//
//  1. The committed Raft ConfChange is the truth; the stream is how everyone
//     learns it and how operators drive it.
//  2. Only the current leader turns requests into proposals (Manager). It
//     reads every request from the start of the stream on each leadership
//     term; requests already settled are recognised by ID in replicated
//     state and only their outcome is published again (de-duplicated by
//     Nats-Msg-Id), so a leader change neither loses nor repeats a request.
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
//  6. A node learns that it was removed from its log or from the committed
//     records of the stream, never from a peer's drop, and stops itself.
//  7. The cluster records which stream it is bound to (name and creation
//     time) in replicated state. A missing or recreated stream stops
//     membership operations with a clear error (Manager.Problem, the
//     node's /status); routing continues from the replicated directory. An
//     empty stream is never read as "no members" (ErrEmpty).
//
// # Join flow
//
// A new node creates its incarnation, publishes an Announce and waits for a
// Committed record naming its incarnation; `raftbus member add NAME` finds
// the newest announcement under NAME that is neither a member nor
// tombstoned and submits the request.
package membership
