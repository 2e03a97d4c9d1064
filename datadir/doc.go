// Package datadir manages the identity of a raftbus node's data directory.
//
// A data directory belongs to exactly one node incarnation. Its identity
// file (dir/IDENTITY, JSON) records:
//
//   - incarnation: a UUID v7 generated when the identity is created and
//     never changed or reused. The transport addresses every node by its
//     incarnation, so a directory that is wiped and recreated gets a new
//     incarnation and can never receive traffic meant for its predecessor.
//   - cluster_id: the cluster's UUID, empty until the node bootstraps or
//     joins one; then fixed.
//   - raft_id: the Raft ID as 16 hex digits, empty until assigned (a joining
//     node gets it from `member add`); then fixed.
//   - name, created_at, format_version.
//
// An example file:
//
//	{
//	  "format_version": 1,
//	  "cluster_id": "0193f3c4-7a51-7c2e-9a1d-2f6c1e0b9d42",
//	  "raft_id": "0000000000000002",
//	  "incarnation": "0193f3c4-8b02-7d11-8e5f-51a0c3e7b6a9",
//	  "name": "n2",
//	  "created_at": "2026-11-25T20:00:00.123Z"
//	}
//
// # Contract
//
// Call Lock first: it flocks dir/LOCK so that two processes never use one
// directory at once (ErrLocked names the directory and the holder's pid).
// Then OpenOrCreate (or Create/Load) and check the result against what the
// operator said (Expect): a directory that belongs to another cluster, Raft
// ID or incarnation is refused with a *MismatchError (ErrMismatch) that
// names both sides. Fields that are still unset are filled in from Expect
// by OpenOrCreate, or explicitly by SetCluster and SetRaftID; a field that
// is set is never overwritten.
//
// Every write of the identity file is atomic and durable: a temporary file
// is fsynced, moved into place (a hard link for Create, so it never
// replaces an existing identity; a rename for updates) and the directory is
// fsynced. Create refuses a directory that holds data but no identity
// (ErrNotEmpty): such data must not be adopted by a new incarnation. An
// unreadable identity file, or one with an unknown format version, gives
// ErrBadFormat.
//
// The node keeps its Raft log (package raftstore) in RaftDir(dir).
//
// What this package cannot see: if the Raft store under RaftDir is lost but
// IDENTITY survives, the same incarnation comes back with an empty log,
// possibly having forgotten a vote. The node should refuse to start when
// the identity has a Raft ID but the Raft store is empty and the node is
// not joining afresh.
package datadir
