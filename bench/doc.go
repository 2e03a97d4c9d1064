// Command bench is the raftbus side-by-side benchmark. It lives in a Go
// module of its own so that etcd's rafthttp (go.etcd.io/etcd/server/v3),
// zap, HdrHistogram and gonum/plot never enter the main module's go.mod.
//
// Run it from this directory:
//
//	go run .                         # full run, 3 A/B rounds (~5 minutes)
//	go run . --smoke                 # CI: one tiny round, seconds
//	go run . --json > result.json    # machine-readable
//	go run . --plot bench.png        # latency and throughput plot
//	go run . --profile prof/         # pprof CPU and alloc profiles per process
//
// Section 1 compares the natsbus Bus with raw nats.go publish/subscribe of
// the same bytes (real raftbridge envelopes of a MsgApp) through one
// embedded NATS server, in this process. Section 2 runs the same 3-node
// cluster (raftstore with fsync, the kv state machine, node.Propose of
// kv.EncodePut) over raftbus and over etcd's rafthttp, each node in a child
// process of its own (this binary re-executed in a hidden mode), the NATS
// server in another, and drives closed-loop clients from the parent over a
// small binary control protocol to the leader (see ctl.go for why not
// HTTP; --load http uses the kv HTTP API instead). CPU time comes from
// /proc/<pid>/stat over each measured window, peak RSS from VmHWM in
// /proc/<pid>/status. Rounds alternate the transports, and every cluster
// is started fresh. All traffic stays on 127.0.0.1 and every step is
// bounded in time and in operations.
//
// BENCHMARKS.md in the repository root records results and their analysis.
package main
