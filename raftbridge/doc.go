// Package raftbridge carries the messages of one go.etcd.io/raft/v3 node
// over a [bus.Bus] and validates everything it receives before Raft sees it.
//
// Every node incarnation (a UUID created with the node's data directory and
// never reused) has its own bus subjects, and every envelope names the
// cluster, the sending Raft ID and incarnation and the receiving Raft ID and
// incarnation. The bridge drops, counts and logs anything that is not meant
// for this incarnation of this Raft ID in this cluster, or that does not
// come from a current member: the incarnation the [Directory] says holds
// the sender's Raft ID. A sender the directory does not know is a stranger
// and gets nothing: no step into Raft, no reply.
// So a removed node's traffic never reaches a new process that took over its
// host and port, and a misdirected heartbeat never reaches raft, which would
// not check its To field (etcd#17081) and may panic on it.
//
// The package knows nothing of NATS: it talks to the bus interface only.
//
// # Usage
//
// A raft.Node has Step, not Process; adapt it (raft v3.7 takes messages by
// pointer, and the bridge hands each one over to the callee):
//
//	type raftNode struct{ raft.Node }
//
//	func (n raftNode) Process(ctx context.Context, m *raftpb.Message) error { return n.Step(ctx, m) }
//
// Then:
//
//	dir := raftbridge.NewMemDirectory() // primed before Raft starts, see Membership
//	b, err := raftbridge.New(raftbridge.Config{
//		Cluster: clusterID, ID: raftID, Incarnation: incarnation,
//		Bus: bus, Directory: dir, Raft: raftNode{node},
//		Logger: logger, Registerer: registry,
//	})
//	if err != nil { ... }
//	if err := b.Start(); err != nil { ... }
//	defer b.Close()
//
//	for rd := range readyC { // the raft loop
//		persist(rd.Snapshot, rd.HardState, rd.Entries)
//		b.Send(rd.Messages)
//		for _, e := range rd.CommittedEntries {
//			// a ConfChange: the directory first, then raft
//			accepted, err := raftbridge.ApplyConfChange(dir, cc)
//			node.ApplyConfChange(accepted)
//		}
//		node.Advance()
//	}
//
// examples/ownraft in the repository is a complete program (bootstrap,
// join, removal, snapshots, restart, over NATS and over membus), and
// docs/own-raft-loop.md the guide to it.
//
// # Membership
//
// The directory is what keeps a removed node out, so it must be fed from
// committed membership only and must never forget a tombstone. The kit:
//
//   - [EncodeConfContext] is the Context of a ConfChange that adds a member
//     (and of each raft.Peer of a bootstrap): Raft ID, incarnation, nkey
//     public key, name, as JSON; the reference node writes the same.
//   - [ApplyConfChange] applies a committed ConfChange to a [MemDirectory]
//     (members, keys, tombstones) and returns the change for
//     raft.Node.ApplyConfChange: the same one, or, if the directory refuses
//     it (a tombstoned ID or incarnation comes back, an ID held by another
//     incarnation), one raft ignores, so that raft and the directory agree
//     on every node. [ApplyConfChangeMember] is the same for a loop whose
//     contexts have a format of its own: it takes the decoded member. The
//     reference node applies every committed change through it (after its
//     own checks: request de-duplication, last voter), and its bridge
//     consults that MemDirectory, so both paths are one.
//   - [MemDirectory.Save] is an image of the directory to store in every
//     snapshot beside the application's state; [MemDirectory.Restore]
//     loads it when a snapshot is restored (on restart, or received from
//     the leader). It keeps every tombstone it already has.
//
// A bootstrap primes the directory with the founding members (the
// ConfChanges raft.StartNode commits for them, applied to the directory
// before Raft starts; applying them again from the log is a no-op), and a
// joining node with the current members (an image, or verified membership
// records) before its Raft starts.
//
// # Responsibilities
//
// As with raft itself, the caller holds up its end of a contract:
//
//  1. Call [Bridge.Send] from the raft loop with Ready.Messages, after the
//     HardState, Entries and Snapshot of the same Ready are durably
//     persisted (raft's rule: messages go out only after the state they
//     announce is stable). Send marshals every message before it returns, so
//     marshalling happens on the raft loop, as raft's doc.go requires, and
//     the messages may be reused afterwards; only a MsgSnap's snapshot data
//     is read later, and raft guarantees it is immutable. Send never blocks.
//     With AsyncStorageWrites, hand Send only messages addressed to peers;
//     raft-local messages are dropped ("local_message").
//  2. Implement [Raft] safely for concurrent use. Process is called from the
//     bus's delivery goroutine and must not block for long: step the message
//     with the given context (its deadline is Config.ProcessTimeout, for
//     each message on its own) or queue it. ReportUnreachable and ReportSnapshot are called from the
//     bridge's report goroutine, never from inside Send, so they may wait
//     for the raft loop (raft.Node's do).
//  3. Feed the [Directory] from committed membership only: ConfChanges
//     applied from the log and restored snapshots ([ApplyConfChange],
//     [MemDirectory.Restore]; see Membership). Tombstone every removed
//     Raft ID and its incarnation forever, snapshots included. The bridge
//     never changes the directory and never infers membership from
//     traffic. A joining node must prime its directory with the current
//     members (from verified membership records) before its Raft starts:
//     the bridge drops everything from senders it does not know, its
//     leader included.
//  4. Keep raft.Config.MaxSizePerMsg well below Config.MaxEnvelopeBytes. A
//     message too large for one envelope still goes out alone, and the bus
//     may refuse it ("too_large", reported unreachable).
//  5. For complete incoming snapshots, implement [SnapshotReceiver] to
//     persist the snapshot before stepping it; otherwise it goes to Process.
//  6. Close the bridge before stopping the node, and the bus after the
//     bridge (the bridge does not own the bus).
//
// # Reports to Raft
//
// ReportUnreachable(id) is called whenever outbound traffic for id is
// dropped (for every outbound reason but "local_message", and but Send
// after Close) and when a snapshot transfer to id fails. ReportSnapshot(id, SnapshotFailure) is
// called for every MsgSnap dropped in Send and for every transfer that fails,
// times out or is abandoned. ReportSnapshot(id, SnapshotFinish) is called
// only after the receiver acknowledged that its node took the snapshot
// (ReceiveSnapshot or Process returned nil), never merely because the data
// was queued. The only MsgSnaps without a report are those superseded by a
// newer MsgSnap to the same peer (raft has moved on to the newer one) and
// those in flight when the bridge closes. Reports are queued and coalesced
// per peer (one pending unreachable flag, the latest snapshot status) and
// made from the bridge's own goroutine.
//
// # Many groups per host
//
// A process that holds members of many Raft groups under one incarnation
// gives each group a Bridge of its own through a Host (NewHost,
// Host.NewBridge): one bus subscription and one send queue per peer host
// carry every group. Each group keeps its own directory, tombstones,
// snapshots, drop counters and metrics (labelled "group"); a Raft ID means
// something only within its group. The Host reads the group from an
// envelope's header to find that group's bridge and drops envelopes of
// groups it holds no bridge for ("unknown_group", in Host.Stats and
// raftbus_host_dropped_payloads_total); the group's bridge then runs every
// check below, the group included. Nothing the Host adds is trusted: a
// batch only saves frames, a ping only says the subject's source is alive.
//
// Plain heartbeats and their responses (no read-index context) wait up to
// HostConfig.CoalesceInterval (50 ms) for other groups' heartbeats to the
// same host and leave in one batch: with many active groups, one frame per
// interval per peer instead of one per group per tick. Heartbeats that
// carry a read-index context, and everything else, leave at once.
// Host.Ping and Host.LastHeard give the liveness of peer hosts, which is
// what lets idle groups stop heartbeating (node.Host's quiescence).
//
// # Validation of inbound payloads
//
// Each payload the bus delivers is checked in this order; the first failure
// drops it with the reason in quotes. Checks 1 to 8 look at the fixed
// header and the subject only: the body of an envelope is decoded only
// once its sender is known to be a current member, so a stranger's payload
// costs a header parse and nothing else.
//
//  1. The fixed header parses ("decode": too short, bad magic) and its
//     version is one this build speaks, 1 or 2 ("version"; checked right
//     after the magic, before anything that depends on the version).
//  2. The bus kind is msg or snap ("unknown_kind") and the envelope kind
//     matches it ("decode").
//  3. The envelope's cluster, and the subject's cluster token, are this
//     bridge's cluster ("cluster_mismatch"), and its group is this
//     bridge's Config.Group ("group_mismatch").
//  4. The envelope's destination Raft ID and incarnation, and the subject's
//     destination token, are this bridge's ("wrong_destination").
//  5. The subject's source token equals the envelope's source incarnation,
//     and the source Raft ID is a real one (not 0 nor a raft-local target)
//     ("source_mismatch"). With per-incarnation NATS publish permissions
//     the subject's source token is authenticated, so this binds the
//     envelope to a credential.
//  6. Neither the source Raft ID nor its incarnation is tombstoned
//     ("tombstoned").
//  7. The source does not claim this bridge's own Raft ID, the directory
//     does not map the source Raft ID to a different incarnation, and (if
//     the directory implements IncarnationLookup) the source incarnation
//     does not belong to a member under another Raft ID
//     ("stale_incarnation").
//  8. The directory maps the source Raft ID to the source incarnation: the
//     sender is a current member ("unknown_sender"). See Unknown senders.
//  9. The body parses: every length and count within the remaining bytes,
//     canonical varints, protobuf messages, no trailing bytes ("decode").
//  10. For message envelopes, each message on its own: its To is this
//     bridge's ID, its type is not raft-local and not MsgSnap (snapshots
//     only travel through the snapshot protocol), and its From is the
//     envelope's source ID, or, for the types raft forwards on another
//     node's behalf (MsgReadIndex, MsgProp), a current member
//     ("message_mismatch").
//  11. Raft.Process is called for each message, with a deadline of its own
//     (Config.ProcessTimeout); an error drops that message
//     ("process_failed").
//
// Checks 1 to 9 drop the whole payload: the header, or the bytes, cannot
// be trusted. Checks 10 and 11 drop one message and keep its neighbours:
// the header already proved a member sent the envelope, and raft sends
// messages this bridge did not foresee (a follower forwards a peer's
// MsgReadIndex or MsgProp to its leader keeping the peer's From, etcd raft's
// stepFollower), so dropping a whole batch for one of them turned one
// unexpected message into a stall of thousands. The leader answers a
// forwarded MsgReadIndex To the original requester; Send routes that like
// any message to a member. Likewise each message has a ProcessTimeout
// budget of its own (at least half of it), so a raft loop that stalls
// costs the message being stepped, not the envelope's tail.
//
// Snapshot chunks and acknowledgements go through checks 1 to 9; chunks
// then through the transfer's own checks (see below).
//
// # Drops
//
// Every drop is counted in one of two units, never mixed. Raft messages
// go to raftbus_transport_dropped_messages_total{reason} (and
// Stats.DroppedMessages): outbound drops, per-message drops of an admitted
// envelope, and a message envelope dropped on its header (checks 3 to 8)
// when the message count its body announces is plausible (at most one
// message per remaining byte and at most 4096). Whole payloads
// whose messages cannot be counted go to
// raftbus_transport_dropped_envelopes_total{reason} (and
// Stats.DroppedEnvelopes), one per envelope: undecodable payloads,
// unsupported versions, unknown kinds, snapshot chunks and acks, message
// envelopes with an implausible count, and the bus's own inbound drops
// (Receiver.Dropped, counted as the bus reports them). Stats.Dropped is the
// sum of both, for a one-glance view. The series of every reason in
// [DropReasons] exist from the start, at 0. A bad frame is
// "decode". Every drop is logged at Warn, rate limited per reason
// (Config.DropLogInterval, with a count of the suppressed ones), naming the
// identities involved: hex Raft IDs, incarnations, cluster and subject
// tokens. A drop never panics and never sends anything to the sender: a
// negative answer could be taken for "you were removed" (rafthttp's 403 did
// that) and would make the bridge an amplifier for forged traffic.
//
// Inbound payloads are also dropped as "closed" after Close (and the rest
// of an envelope being stepped when Close begins), and snapshot chunks as
// "queue_full" when the snapshot receiver's bounded queue is full (the
// sender resends them).
//
// Outbound drop reasons: "unknown_peer" (the directory does not know the
// destination), "tombstoned", "local_message", "encode", "closed", and the
// bus's Send errors through [bus.ReasonOf]: "queue_full", "too_large",
// "not_connected", "publish_failed", "closed".
//
// # Unknown senders
//
// A delivery from an incarnation the directory does not know under the
// Raft ID it claims is dropped as "unknown_sender". It never reaches Raft
// (messages, snapshot chunks and acks alike), gets no reply, and leaves no
// state behind: no reply route, no metric series of its own, no snapshot
// buffer. Only the directory names destinations, so Raft cannot answer a
// stranger either. Why: a stranger handed to Raft is a made-up incarnation
// claiming an unused Raft ID, and with replies and a flood of heartbeats it
// can make a follower take it for its leader and forward proposals to it.
// A joining node primes its directory before Raft starts
// (Responsibilities, 3), so it never needs to hear a stranger.
//
// Raft's own defences (terms, PreVote, CheckQuorum) still apply to members;
// the directory's tombstones are what keeps a removed node out.
//
// # Bounded state
//
// Nothing a delivery carries grows state without bound. Metric series and
// Stats keys are Raft IDs of directory members ("unknown", key 0, for
// anything else, such as a snapshot sender removed mid-transfer or an
// unreachable report for an ID the directory does not know), never
// incarnations. The snapshot receiver holds at most one transfer per
// member (a new transfer from the same sender replaces the old one) and
// one remembered outcome per member, and its buffers grow with the data
// that actually arrived, never from the size a chunk claims.
//
// # Snapshots
//
// A MsgSnap carries the whole state (easily 50 MiB and more) and does not
// fit a bus payload, so it travels through its own protocol on bus.KindSnap
// subjects. Send marshals the MsgSnap without its data on the raft loop and
// hands the data (immutable by raft's contract) to a sender goroutine for
// that destination, which runs one transfer at a time; a newer MsgSnap for
// the same destination supersedes a queued or running one.
//
//   - The data is cut into chunks so that each chunk envelope stays below
//     MaxEnvelopeBytes. Every chunk carries the cluster, both endpoints
//     (Raft ID and incarnation), a transfer ID (random, new for every
//     attempt), the snapshot's term and index, its number and the total,
//     the total size and the CRC32C (Castagnoli) of the whole data. Chunk 0
//     also carries the MsgSnap without its data.
//   - Flow control is a window of Config.SnapshotWindow unacknowledged
//     chunks. The receiver accepts chunks strictly in order from one sender
//     and acknowledges cumulatively (ack "progress" with the number of
//     chunks received). An out-of-order chunk is discarded and answered
//     with a "gap" ack, upon which the sender goes back to the receiver's
//     position (once per position); an interval of
//     Config.SnapshotResendInterval without progress makes the sender go
//     back to the last acknowledged chunk. Go-back-N rather than failing
//     the transfer on the first gap: on a lossy bus a 50-chunk snapshot
//     would otherwise almost never complete.
//   - The sender abandons the transfer, and reports SnapshotFailure, after
//     Config.SnapshotTimeout without progress, when the receiver answers
//     "failed", or when the directory no longer maps the destination ID to
//     the incarnation the transfer started with (replaced or tombstoned).
//     After a failure it waits Config.SnapshotRetryBackoff before its next
//     transfer to that peer, doubling with each further failure up to
//     SnapshotTimeout, so that a dead follower does not get a tight loop of
//     snapshots.
//   - The receiver runs one transfer per sender (a member; a new transfer
//     from it replaces the old) and refuses (ack "failed") a snapshot whose
//     claimed size exceeds Config.MaxSnapshotBytes. It reserves nothing
//     from the claimed size: each transfer's buffer grows as chunks arrive
//     (doubling, capped at the claimed size), and a transfer whose next
//     chunk would take the buffers of all transfers in progress beyond
//     MaxSnapshotBytes fails (ack "failed"). It checks that chunk 0's
//     MsgSnap agrees with the envelope (type, From, To, term, index) and
//     that every chunk agrees with chunk 0 and with the total size; a chunk
//     that does not is a drop ("message_mismatch", or "decode" for
//     undecodable metadata) and, like every drop, gets no answer; it also
//     ends the transfer, whose resent chunks then get a "gap" ack at chunk
//     0. The receiver abandons a transfer whose sender was tombstoned or
//     replaced in the directory or that made no progress for
//     SnapshotTimeout, and verifies size and checksum at the end.
//   - A complete snapshot is handed to the node on a goroutine of its own,
//     with a context bounded by Config.SnapshotApplyTimeout: to
//     SnapshotReceiver.ReceiveSnapshot if Raft implements it, else to
//     Process. While the node works, the receiver answers chunks with
//     "applying". Only when the call returns nil does it send the "done"
//     ack, and only that ack makes the sender report SnapshotFinish. An
//     error from the node, a checksum mismatch or a refused transfer yields
//     a "failed" ack (these are protocol outcomes, counted in
//     raftbus_transport_snapshots_received_total, not drops) and
//     SnapshotFailure at the sender. The receiver remembers each
//     sender's last outcome for a while to repeat a lost final ack.
//
// # Streaming snapshots through a SnapshotStore
//
// By default the sender chunks Snapshot.Data from memory and the receiver
// reassembles it in memory (up to MaxSnapshotBytes over all transfers in
// progress). With Config.SnapshotStore set, neither side holds a snapshot
// in memory; the wire protocol above is unchanged, so a bridge with a
// store and one without interoperate (the one without still buffers):
//
//   - The application keeps its snapshots in the store and puts the
//     store's reference, not the data, in raftpb.Snapshot.Data (with
//     FileSnapshotStore: the reference Save returns). Raft's storage, its
//     messages and the MsgSnap marshalled on the raft loop then carry a
//     few dozen bytes.
//   - The sender resolves the reference with SnapshotStore.Open, per
//     attempt, and reads the source chunk by chunk with ReadAt straight
//     into each chunk envelope; a resend after a gap or a stall re-reads
//     its range. The size and CRC32C in every chunk come from the source
//     (FileSnapshotStore records them in the reference), so no pass over
//     the data precedes the transfer. A reference the store refuses fails
//     the transfer (SnapshotFailure), as a bad reference must never panic.
//   - The receiver calls SnapshotStore.Create at chunk 0 (after the checks
//     above and the MaxSnapshotBytes bound, which with a store bounds each
//     snapshot); a refusal is a "failed" ack. Chunks accepted in order are
//     added to a running CRC32C and written to the sink in order by a
//     writer goroutine of the transfer through a queue of a few chunks, so
//     that writing overlaps receiving; when the store falls behind, the
//     receiver stops accepting and the sender's window holds the rest
//     back. A transfer holds O(chunk) memory, never O(snapshot).
//   - After the last chunk, a size or checksum mismatch fails the transfer
//     and aborts the sink (no partial file is left); otherwise the apply
//     goroutine commits the sink (fsync, close, for FileSnapshotStore a
//     rename and a directory fsync) and hands the node a MsgSnap whose
//     Snapshot.Data is the reference Commit returned. SnapshotReceiver
//     gets that reference too: it opens the snapshot in the store to
//     restore it. A commit error is reported like a node's refusal.
//   - A transfer abandoned for any reason (superseded by a newer one from
//     the same sender, sender replaced or tombstoned, no chunk within
//     SnapshotTimeout, a lying chunk, the bridge closing) aborts its sink.
//
// FileSnapshotStore keeps one file per snapshot in a directory, named only
// from validated numbers (term, index and a random id, in hex) and opened
// through an os.Root, so that no reference reaches outside it; its
// versioned 40-byte reference format is documented on the type. It never
// deletes a complete snapshot by itself (no transfer, from whichever
// member, can take away the snapshot the node's storage refers to): with
// Retain complete snapshots it refuses incoming transfers until the
// application removes one (Remove; the bridge removes a snapshot the node
// refused). It allows MaxPartial snapshots being written at once, and
// removes partial files left by a crash when opened.
// While it receives, it starts writeback every 8 MiB and drops the data
// written before from the page cache (Linux), so that a transfer neither
// fills the page cache with a snapshot nor leaves a long fsync for its end.
//
// # Wire format
//
// Every payload is one envelope. All integers are big-endian unless they
// are varints; varints are unsigned LEB128 (encoding/binary's Uvarint) in
// their shortest form, and a longer encoding is malformed. Every version
// keeps the first three bytes (magic and version); the rest of the layout
// belongs to the version. Version 1:
//
//	offset size field
//	     0    2 magic "RB" (0x52 0x42)
//	     2    1 version (1)
//	     3    1 kind: 1 messages, 2 snapshot chunk, 3 snapshot ack
//	     4   16 cluster ID (UUID bytes)
//	    20    8 source Raft ID
//	    28   16 source incarnation
//	    44    8 destination Raft ID
//	    52   16 destination incarnation
//	    68    8 sender's directory version (Directory.Version)
//	    76      body
//
// Version 2 is version 1 with the Raft group (Config.Group) after the
// directory version; the body starts at 84. Group 0 is always written as
// version 1, byte for byte what single-group builds write, and a version 2
// envelope naming group 0 is malformed, so every envelope has one
// encoding:
//
//	76    8 group (1 or more)
//	84      body
//
// A Host also sends, on bus kind msg, two payloads of its own (version 2,
// no header beyond magic, version and kind): a batch (kind 4: a varint
// count of 1 to 4096, then that many varint-length-prefixed group
// envelopes of kinds 1 to 3, which each group validates as if they had
// arrived alone) and a host ping (kind 5: the 16-byte cluster ID, nothing
// else).
//
// Messages body (kind 1, bus kind msg):
//
//	count   varint, 1..4096
//	count times:
//	  len   varint
//	  msg   len bytes: a raftpb.Message in protobuf encoding
//
// nothing may follow the last message. The encoder measures each message
// once (proto.Size) and marshals it straight into the envelope buffer
// (proto.MarshalOptions.MarshalAppend with the cached size).
//
// Snapshot chunk body (kind 2, bus kind snap):
//
//	 0  8 transfer ID
//	 8  8 snapshot term
//	16  8 snapshot index
//	24  4 chunk number (0-based)
//	28  4 chunk count (>= 1, <= max(size, 1))
//	32  8 size of the whole snapshot data
//	40  4 CRC32C (Castagnoli) of the whole data
//	44    meta length (varint) and meta: the MsgSnap without snapshot data,
//	      in protobuf encoding; present (non-empty) in chunk 0 only
//	      data length (varint) and data: this chunk's part of the data
//
// Snapshot ack body (kind 3, bus kind snap), 21 bytes exactly:
//
//	 0  8 transfer ID
//	 8  8 snapshot index
//	16  1 status: 0 progress, 1 gap, 2 applying, 3 done, 4 failed
//	17  4 chunks received in order
//
// The decoders check every count and length against the bytes that remain
// before they allocate (etcd#5386), cap the message count, and return an
// error; they never panic. The codec is internal (internal/wire): a user
// never needs it, and keeping it out of the API leaves the format free to
// gain versions.
//
// # Metrics
//
// Registered on Config.Registerer (none without one). Label "peer" is the
// Raft ID of a directory member as 16 hex digits ("unknown" for any other
// ID), never an incarnation:
//
//	raftbus_transport_sent_messages_total{peer}        Raft messages handed to the bus
//	raftbus_transport_sent_bytes_total{peer}           envelope bytes, snapshot chunks included
//	raftbus_transport_received_messages_total{peer}    validated Raft messages received
//	raftbus_transport_received_bytes_total{peer}       validated envelope bytes received
//	raftbus_transport_dropped_messages_total{reason}   see Drops
//	raftbus_transport_dropped_envelopes_total{reason}  see Drops
//	raftbus_transport_peer_round_trip_time_seconds{peer}  histogram, see below
//	raftbus_transport_active_peers                     peers heard from within ActivePeerWindow (gauge)
//	raftbus_transport_unreachable_reports_total{peer}  ReportUnreachable calls
//	raftbus_transport_snapshots_sent_total{peer,result}
//	raftbus_transport_snapshots_received_total{peer,result}
//	raftbus_transport_send_queue_payloads{peer}        bus send queue depth (gauge)
//	raftbus_transport_send_queue_bytes{peer}           bus send queue bytes (gauge)
//
// Snapshot results are "success", "failure", "timeout" and "abandoned".
// The round-trip time is measured by a leader: from handing a MsgHeartbeat
// to the bus until the follower's MsgHeartbeatResp arrives, from the oldest
// heartbeat still unanswered (so a slow follower shows its delay, not the
// heartbeat interval; one unanswered for 10 s is forgotten). Series of a
// member whose Raft ID the directory reports removed are deleted before
// every scrape and from Stats, so a long-lived cluster does not accumulate
// them; a member's snapshot and unreachable series appear at 0 with its
// first traffic.
// [Bridge.Stats] returns the same counters as a plain struct.
package raftbridge
