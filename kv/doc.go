// Package kv is raftbus's reference state machine: a replicated key-value
// store, and the HTTP API that serves it from any node.
//
// # State machine
//
// [Store] implements node.StateMachine. The node calls Apply, Snapshot and
// Restore from its single apply goroutine; HTTP handlers read the Store
// concurrently (Get, Range, Prefix, Len, AppliedIndex, Digest). Every Apply
// happens under the Store's write lock, so a reader never observes half an
// entry.
//
// Commands are [EncodePut] and [EncodeDelete]: a compact binary format that
// starts with a version byte (see command.go). Apply is deterministic: an
// entry whose data does not decode returns an error wrapping
// [ErrBadCommand] and changes nothing except the applied index, identically
// on every node; an empty entry (the no-op a new leader appends) only
// advances the applied index; an index at or below the applied index is
// refused with [ErrStaleIndex]. A valid command returns a [Result].
//
// Keys are kept sorted (a B-tree, github.com/google/btree) for range and
// prefix listings. Each key records its value, the index of the entry that
// created it and the index of the last entry that modified it.
//
// Snapshots are a versioned, length-prefixed stream: header (magic "RBKV",
// version, applied index, record count), one record per key in key order,
// and a CRC-32C of everything (see snapshot.go). [Store.Snapshot] returns it
// as one buffer allocated at its exact size; [Store.WriteSnapshot] streams
// it. [Store.Restore] and [Store.RestoreFrom] verify a snapshot completely
// before replacing the whole state, applied index included. Snapshot,
// WriteSnapshot and Digest work on a copy-on-write clone of the tree, so
// they do not hold up Apply or readers. [Store.Digest] is a SHA-256 over the
// keys and values only, for comparing replicas in tests.
//
// # HTTP API
//
// [NewHandler] serves the API below. Keys are the rest of the path after
// /kv/, percent-decoded (so "a/b" and "a%2Fb" are the same key). A key is
// 1 to MaxKeyBytes (default 1 KiB) bytes of valid UTF-8 without control
// characters (U+0000-U+001F, U+007F-U+009F); a path with empty, "." or ".."
// segments is refused rather than redirected, so such keys must
// percent-encode their slashes or dots. All bodies, errors included, are
// JSON.
//
//	Method  Path                         Success  Body
//	PUT     /kv/{key}                    200      {"key","index","created"}
//	GET     /kv/{key}                    200      {"key","value"|"value_base64","create_index","mod_index"}
//	DELETE  /kv/{key}                    200      {"key","index","deleted"}
//	GET     /kv?prefix=P[&start=S]       200      {"kvs":[...],"count","more","next"}
//	GET     /kv?start=A&end=B            200      same; keys in [A, B), no end = to the last key
//	GET     /status                      200      whatever HandlerConfig.Status returns
//	GET     /metrics                     200      HandlerConfig.Metrics (Prometheus text)
//	GET     /healthz                     200/503  "ok" or why not (HandlerConfig.Healthz), plain text
//	GET     /readyz                      200/503  "ok" or why not (HandlerConfig.Readyz), plain text
//
// With HandlerConfig.Auth every endpoint but /healthz and /readyz requires
// "Authorization: Bearer <token>" or a TLS client certificate the server
// verified ([Auth]); without either the answer is 401 {"code":
// "unauthorized"}. The probes stay open so that orchestrators need no
// secret, and their body is one short line saying why a node is not
// healthy or not ready.
//
// PUT's body is the value (at most MaxValueBytes, default 1 MiB). PUT and
// DELETE return once the entry is committed and applied on the node that
// took the request, with the entry's index; "created" is false when the PUT
// overwrote a key, "deleted" is false when the key did not exist. Any node
// accepts writes: a follower's node runtime forwards the proposal to the
// leader through Raft itself (MsgProp); kv only calls [Cluster.Propose].
//
// Reads (GET of a key and listings) are linearizable by default: the
// handler waits for [Cluster.ReadIndex] and then reads the local Store.
// With ?serializable=true it reads the local Store at once, which may be
// stale on a lagging follower but needs no leader.
//
// # Shards
//
// The key space is one Raft group (HandlerConfig.Store and Cluster) or is
// split over several (HandlerConfig.Shards, up to [MaxShards]), each with
// its own Store and Cluster. Key k lives in Shards[[ShardOf](k, n)]: the
// FNV-1a 64 hash of its bytes modulo the shard count n. That placement is
// part of the cluster's contract, so the shard count is fixed when a
// cluster is created: changing it, the order of the shards or the hash
// would move keys to groups that do not hold them.
//
// Clients see the same API either way. A PUT, GET or DELETE involves only
// its key's shard, so a shard without a leader, timing out or stopped
// fails only the requests for its keys. A listing involves every shard: a
// linearizable one first waits for every shard's read barrier, in
// parallel and within RequestTimeout, and fails, with the error of the
// first shard that failed, if any of them does (never a partial list; the
// failure cancels the other barriers). It then merges the shards in key
// order, so limit, more and next behave exactly as for one Store holding
// all keys. A listing over several shards is not a snapshot, though: each
// shard is read after its own barrier, and a shard holding many of the
// listed keys may be read in more than one batch, so a listing that races
// with writes may show some of them and not others (every key it returns
// is as fresh as a linearizable GET's).
//
// Values are returned as the string "value" when they are valid UTF-8, and
// otherwise as "value_base64" (standard base64 with padding); exactly one of
// the two is present. ?encoding=base64 always returns "value_base64".
//
// Listings return keys in ascending byte order, at most limit of them
// (?limit=N; default HandlerConfig.ListLimit, 100; values above
// MaxListLimit, 1000, are lowered to it). "more"
// says whether further keys are in range and "next" is the first of them:
// repeat the request with start=next to continue. prefix and end are
// mutually exclusive.
//
// Examples:
//
//	curl -X PUT --data-binary 'hello' http://127.0.0.1:8080/kv/greeting
//	{"key":"greeting","index":7,"created":true}
//	curl http://127.0.0.1:8080/kv/greeting
//	{"key":"greeting","value":"hello","create_index":7,"mod_index":7}
//	curl 'http://127.0.0.1:8080/kv/greeting?serializable=true&encoding=base64'
//	{"key":"greeting","value_base64":"aGVsbG8=","create_index":7,"mod_index":7}
//	curl 'http://127.0.0.1:8080/kv?prefix=user/&limit=2'
//	{"kvs":[{"key":"user/a",...},{"key":"user/b",...}],"count":2,"more":true,"next":"user/c"}
//	curl 'http://127.0.0.1:8080/kv?prefix=user/&start=user/c&limit=2'
//	curl 'http://127.0.0.1:8080/kv?start=a&end=m'
//	curl -X DELETE http://127.0.0.1:8080/kv/greeting
//	{"key":"greeting","index":9,"deleted":true}
//
// # Errors
//
// Errors are {"error": "<message>", "code": "<code>"}. Node errors are
// matched with errors.Is:
//
//	Status  Code                When
//	400     bad_key             empty, too long, not UTF-8, control characters, unclean path
//	400     bad_request         bad limit/serializable/encoding, prefix with end, unreadable body
//	404     not_found           unknown key, unknown endpoint
//	405     method_not_allowed  wrong method; the Allow header lists the right ones
//	413     too_large           body over MaxValueBytes, or node.ErrTooLarge
//	503     no_leader           node.ErrNoLeader; Retry-After: 1
//	503     proposal_dropped    node.ErrProposalDropped (e.g. leader change); Retry-After: 1
//	503     stopped             node.ErrStopped or node.ErrRemoved: use another node
//	504     timeout             RequestTimeout (default 5 s) expired or the request was canceled
//	500     internal            anything else (details are logged, not returned)
//
// A 504 on a PUT or DELETE means the outcome is unknown: the entry may
// still commit after the handler gave up. Retrying is safe in the sense
// that both commands are idempotent, but a retried DELETE may report
// "deleted": false for a key its first attempt removed, and a retried PUT
// "created": false.
package kv
