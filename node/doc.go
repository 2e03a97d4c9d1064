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
//     (membership image plus state machine bytes) and compacts the log,
//     keeping CompactionOverhead entries for slightly lagging followers.
//     Lagging or new followers receive the snapshot over the bus
//     (raftbridge's snapshot protocol); a received snapshot is acknowledged
//     only once it is durable here (ReceiveSnapshot).
//  5. Membership is replicated state: ConfChangeV2 entries whose Context
//     names the member (incarnation, name, client URL). A change is
//     validated against replicated state on apply (removed IDs and
//     incarnations can never return, an ID keeps its incarnation) and a
//     rejected change is applied to Raft as a no-op, identically on every
//     node. Tombstones travel in snapshots, so they survive compaction. The
//     membership image is the bridge's Directory.
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
package node
