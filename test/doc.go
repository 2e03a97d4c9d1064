// Package test holds raftbus's integration and fault tests: whole Raft
// clusters of node runtimes over the in-memory bus, an embedded nats-server
// and an in-process three-server NATS cluster, plus end-to-end tests of the
// raftbus binary. It has no non-test code.
package test
