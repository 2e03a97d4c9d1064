package raftbridge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/raftbridge"
)

// raftNode adapts a raft.Node to raftbridge.Raft: ReportUnreachable and
// ReportSnapshot already have the right signatures, Process steps.
type raftNode struct{ raft.Node }

func (n raftNode) Process(ctx context.Context, m *raftpb.Message) error { return n.Step(ctx, m) }

// ExampleNew wires a single-node cluster: a bus, a directory fed from the
// node's committed membership, a bridge, and the raft loop that persists,
// sends through the bridge, then applies.
func ExampleNew() {
	net := membus.NewNetwork(1) // in production: a natsbus.Bus
	defer net.Close()
	cluster, self := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	b, err := net.NewBus(membus.Config{Cluster: cluster, Self: self})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	// The bootstrap's ConfChange context names the member; the directory
	// learns the founding members before Raft starts.
	me := raftbridge.Member{ID: 1, Incarnation: self, Name: "n1"}
	peerCtx, err := raftbridge.EncodeConfContext(me)
	if err != nil {
		log.Fatal(err)
	}
	dir := raftbridge.NewMemDirectory()
	dir.Add(me)

	storage := raft.NewMemoryStorage()
	node := raft.StartNode(&raft.Config{
		ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: storage,
		MaxSizePerMsg: 256 << 10, MaxInflightMsgs: 64, CheckQuorum: true, PreVote: true,
		Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	}, []raft.Peer{{ID: 1, Context: peerCtx}})
	defer node.Stop()

	bridge, err := raftbridge.New(raftbridge.Config{
		Cluster: cluster, ID: 1, Incarnation: self,
		Bus: b, Directory: dir, Raft: raftNode{node},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bridge.Start(); err != nil {
		log.Fatal(err)
	}
	defer bridge.Close() // before node.Stop and b.Close (defers run in reverse)

	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			node.Tick()
		case rd := <-node.Ready():
			// 1. Persist.
			if rd.HardState != nil {
				_ = storage.SetHardState(rd.HardState)
			}
			_ = storage.Append(rd.Entries)
			// 2. Send, only after persisting.
			bridge.Send(rd.Messages)
			// 3. Apply; membership feeds the directory.
			for _, e := range rd.CommittedEntries {
				if e.GetType() != raftpb.EntryConfChange {
					continue // the state machine's business
				}
				cc := new(raftpb.ConfChange)
				if err := proto.Unmarshal(e.GetData(), cc); err != nil {
					log.Fatal(err)
				}
				// The directory first (members, keys, tombstones), then
				// raft, with what the directory accepted.
				accepted, err := raftbridge.ApplyConfChange(dir, cc)
				if err != nil {
					log.Print(err) // refused: raft gets a change it ignores
				}
				node.ApplyConfChange(accepted)
			}
			node.Advance()
			if rd.SoftState != nil && rd.SoftState.RaftState == raft.StateLeader {
				fmt.Println("leader elected; dropped:", len(bridge.Stats().Dropped))
				return
			}
		}
	}
	// Output: leader elected; dropped: 0
}

// A directory image travels in the application's snapshots, so that a
// node restored from one (on restart, or sent by the leader) still drops
// the removed incarnation.
func ExampleMemDirectory_Save() {
	n2 := raftbridge.Member{ID: 2, Incarnation: uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-000000000002")}
	ctx, _ := raftbridge.EncodeConfContext(n2)
	dir := raftbridge.NewMemDirectory()
	_, _ = raftbridge.ApplyConfChange(dir, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(2), Context: ctx})
	_, _ = raftbridge.ApplyConfChange(dir, &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(2)})

	image := dir.Save() // into the snapshot, beside the state machine's data

	restored := raftbridge.NewMemDirectory() // a restart
	if err := restored.Restore(image); err != nil {
		log.Fatal(err)
	}
	_, err := raftbridge.ApplyConfChange(restored, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(2), Context: ctx})
	fmt.Println(restored.RemovedIncarnation(n2.Incarnation), errors.Is(err, raftbridge.ErrRefused))
	// Output: true true
}
