// Package node runs one member of a raftbus cluster: an etcd raft node, the
// loop that persists and transmits its output, the loop that applies
// committed entries to a StateMachine, and the raftbridge that carries its
// messages over a bus.
//
// # Usage
//
//	n, err := node.New(node.Config{
//		Cluster: clusterID, ID: 1, Incarnation: inc,
//		Peers:        []node.Member{{ID: 1, Incarnation: inc}}, // only to bootstrap
//		Storage:      store,   // raftstore.Store, or node.NewMemoryStorage() in tests
//		StateMachine: kvStore, // anything implementing StateMachine
//		Bus:          b,       // natsbus.Bus, or a membus.Bus in tests
//	})
//	idx, res, err := n.Propose(ctx, cmd) // returns once applied here
//	err = n.ReadIndex(ctx)               // then read local state linearizably
//	n.Stop()
//
// # Contract
//
//  1. The Ready loop persists before it transmits: a snapshot and the
//     entries and hard state of each Ready are durable (Storage.Save) before
//     a follower or candidate sends the messages of that Ready. A leader
//     sends its appends while it writes them itself, as the Raft thesis
//     (§10.2.1) and etcd allow: a leader's messages depend on no vote.
//  2. Messages are marshalled by the bridge inside the Ready loop, on the
//     goroutine that owns them; raftpb values are never copied.
//  3. Committed entries are applied by one goroutine, in order, through a
//     bounded channel: a slow state machine slows Raft down instead of
//     growing a queue.
//  4. Every SnapshotEntries applied entries the node writes a snapshot
//     (membership image, proposal sessions table, state machine bytes) and
//     compacts the log, keeping CompactionOverhead entries (default 5000,
//     as etcd) for lagging followers to catch up from the log. Lagging or
//     new followers receive the snapshot over the bus (raftbridge's
//     snapshot protocol). A snapshot sent to a peer always covers the
//     current membership: when the stored one predates the last applied
//     membership change (a member added since would refuse it, as not in
//     its ConfState), Raft is told it is temporarily unavailable and the
//     apply loop takes one at its applied index at once; Raft sends it on
//     the peer's next heartbeat response (ondemand.go). A snapshot's
//     membership image is always the membership as applied at its index.
//     A received snapshot is acknowledged only once it is durable here
//     (ReceiveSnapshot): after the Ready carrying it is saved as a whole.
//  5. Membership is replicated state: ConfChangeV2 entries whose Context
//     names the member (incarnation, name, client URL). A change is
//     validated against replicated state on apply (removed IDs and
//     incarnations can never return, an ID keeps its incarnation) and a
//     rejected change is applied to Raft as a no-op, identically on every
//     node. Tombstones travel in snapshots, so they survive compaction. The
//     membership image is the bridge's Directory. An operator request
//     (MembershipChange.RequestID) is decided once: applied, rejected when
//     applied (also ErrConflict against ExpectVersion), or rejected by the
//     leader through a system entry (RejectMembership); a decided request
//     ID is never carried out later. The highest decided stream sequence
//     and the stream binding (RebindStream) are replicated with it.
//  6. A node that applies its own removal stops itself with ErrRemoved and
//     logs that its data directory must be wiped before the machine can
//     rejoin (as a new incarnation with a new Raft ID). It never learns this
//     from a peer's drop.
//  7. Propose waits for the entry to be applied here; ReadIndex implements
//     linearizable reads (Raft's ReadIndex, then wait for apply). Both fail
//     fast with ErrNoLeader when no leader is known. Followers forward
//     proposals to the leader (Raft's MsgProp).
//  8. Stop transfers leadership away from a leader, then stops every
//     goroutine and waits for them; it is idempotent.
//  9. A node whose storage fails (ErrStorage) or whose state machine fails
//     (ErrStateMachine: a snapshot that cannot be restored, or an Apply
//     error wrapping ErrStateMachine) stops itself. After a state machine
//     failure nothing more is applied and no proposer is answered from
//     the batches still queued; waiting callers and Err get the failure
//     (which also matches ErrStopped). Any other Apply error is the
//     command's own result, handed to its proposer; the node goes on.
//  10. Network input never panics the node: Process refuses (with
//     ErrInvalidMessage, counted by the bridge as a drop) the messages
//     etcd raft would panic on (guard.go): a heartbeat committing beyond
//     the stored log, an append whose entries do not follow its index, an
//     empty proposal or one with an undecodable membership change.
//  11. A node joining with empty storage knows the members only from
//     Config.JoinMembers (verified by the caller) until the first
//     replicated membership arrives; the bridge admits no one else.
//
// # Proposal sessions (at-most-once application)
//
// Raft may commit the same proposal twice: the network duplicates or
// replays a MsgProp, a client retries through another node. Every
// proposal is therefore applied at most once, decided from replicated state
// alone, so that every replica decides alike:
//
//   - A node process opens a session when it starts: (its Raft ID, an
//     epoch). The epoch is the wall clock in nanoseconds, raised above every
//     epoch the restored snapshot records for this Raft ID. Each proposal
//     carries the session and a sequence number that only grows within the
//     process (apply.go has the entry format).
//   - The sessions table (replicated, owned by the apply loop, carried in
//     every snapshot) keeps, per proposing Raft ID, its sessionsPerID (4)
//     most recent sessions by epoch; per session, the highest applied
//     sequence number and a window of sessionWindow (4096) bits for those
//     below it.
//   - A committed proposal is applied only if its sequence number is above
//     the session's highest, or inside the window and not yet applied. It
//     is refused (not applied; its proposer, if waiting, gets
//     ErrProposalDropped) when it was applied, when it is below the window,
//     when its session is older than every kept session of a full table
//     (it may have been forgotten), or when its Raft ID is not a member
//     at its index (by the replicated history of membership changes). An
//     unknown session with room in the table is new: sessions are
//     forgotten only by eviction of the oldest.
//   - A node that sees its own session refused as forgotten (its clock went
//     backwards across a restart) moves to an epoch above the newest
//     recorded; its later proposals are accepted.
//   - Bounds: the table holds at most 4 sessions of 4096 bits per current
//     member, whatever Raft IDs entries claim: non-members are refused,
//     and a removed member's sessions are dropped (when it, or a new
//     proposer, next shows up).
//   - Entries written before sessions existed (tag 0x01) are applied as
//     before, without the check; snapshots without a sessions table
//     (format version 1) restore an empty one.
//
// # Many groups per host
//
// A Host runs the nodes of many Raft groups in one process (Config.Host,
// Config.Group): one incarnation, one raftbridge.Host (one bus
// subscription, one send queue per peer host, heartbeats of all groups
// coalesced), one tick loop. Each group is a full Node with its own
// storage, membership, tombstones, snapshots and sessions; a group that
// stops (removed from that group, say) leaves the others running. Storage
// is the caller's: raftstore.Host keeps every group in one Pebble store,
// whose commit pipeline folds the groups' concurrent synced Saves into
// shared WAL fsyncs.
//
// Idle groups quiesce, following CockroachDB's rules:
//
//   - A leader quiesces after HostConfig.QuiesceTicks idle ticks: it leads
//     with no transfer under way, nothing waits to be proposed or read,
//     everything committed is applied, and every follower has
//     acknowledged the whole log in steady replication. Its next
//     heartbeats carry a quiesce marker (their context), then it stops
//     ticking. A MsgApp or MsgSnap in the same Ready cancels the attempt.
//   - A follower that steps a marked heartbeat quiesces only if it agrees:
//     the sender is its leader, in its term, at its commit index, and it
//     holds no entry beyond the commit index and none unapplied. Otherwise
//     it stays awake; if the leader went quiet for good its election timer
//     runs out, and its (pre-)vote request wakes the leader.
//   - A quiescent group ticks and sends nothing. It wakes on a proposal, a
//     read, a membership change or leadership transfer, a snapshot, and
//     any inbound message except heartbeat responses and plain heartbeats
//     of the leader and term it quiesced under (both carry nothing new, and
//     coalescing may deliver them after the marked round, which would wake
//     the group again at once, forever; CockroachDB met the same corner
//     case when it coalesced heartbeats, cockroach#9380, and answered it by
//     flushing ten times per tick; here such messages are stepped and
//     answered, so a leader's check-quorum still counts the follower, but
//     they wake nothing).
//   - A quiescent follower whose leader's host sent nothing, not even a
//     host ping (sent to every peer host every third of an election
//     timeout, whatever the number of groups), for an election timeout
//     wakes; it also proposes an empty entry, which wakes the leader if it
//     is alive after all. If the leader is gone, the awake followers elect
//     another.
//
// Quiescence touches only timers, never what Raft decides, so it cannot
// break safety: a quiescent leader that was partitioned away and replaced
// still believes it leads, but commits nothing (a quorum moved on) and
// serves no read (reads are ReadOnlySafe: a read-index round needs a
// quorum of heartbeat acknowledgements, and waking for the read sends
// heartbeats that the higher term answers). Lease-based reads would not be
// safe with quiescence, and the node does not offer them.
//
// # Testing
//
// Config.Ticker replaces the wall-clock Raft ticker, so tests drive Raft
// time by hand (harness_test.go: nodes over bus/membus on manual clocks,
// where only the chosen leader is ticked). With membus's manual mode
// (Network.Hold, Deliver, Duplicate, Drop) frames wait until the test
// delivers them, so tick, Ready and delivery are driven step by step
// (pump_test.go: a replayed proposal frame, a forwarded read batched with
// other messages, the seed scenario after compaction).
package node
