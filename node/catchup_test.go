package node

import (
	"errors"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The seed scenario on a cluster that has snapshotted and compacted: a
// member added after the last snapshot must catch up (the leader takes a
// snapshot on demand that covers it) and serve a linearizable read, on an
// idle cluster (no later periodic snapshot would ever come) and under load.
func TestNewMemberCatchesUpAfterCompaction(t *testing.T) {
	for _, load := range []bool{false, true} {
		t.Run(fmt.Sprintf("load=%v", load), func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				c.SnapshotEntries, c.CompactionOverhead = 20, 5
			})
			h.bootstrap(3)
			l := h.elect(1)
			ctx := ctxT(t)
			for i := range 60 {
				if _, _, err := l.node.Propose(ctx, fmt.Appendf(nil, "k%d=v%d", i, i)); err != nil {
					t.Fatal(err)
				}
			}
			// Followers apply, and so compact, a little after the leader.
			for _, hn := range h.nodes {
				deadline := time.Now().Add(10 * time.Second)
				for fi, _ := hn.node.FirstIndex(); fi < 20; fi, _ = hn.node.FirstIndex() {
					if time.Now().After(deadline) {
						t.Fatalf("%s has not compacted: first index %d", hn.m.Name, fi)
					}
					time.Sleep(time.Millisecond)
				}
			}

			// Remove n2 and add its replacement (a new incarnation, Raft ID 4).
			if _, err := l.node.RemoveMember(ctx, 2); err != nil {
				t.Fatal(err)
			}
			h.nodes[2].node.Halt()
			delete(h.nodes, 2)
			m4 := newMember(t, 4)
			if _, err := l.node.AddMember(ctx, m4); err != nil {
				t.Fatal(err)
			}
			n4 := h.startJoining(m4, nil, l.node.Members(), NewMemoryStorage())

			stopLoad := make(chan struct{})
			loadDone := make(chan error, 1)
			if load {
				go func() {
					for i := 0; ; i++ {
						select {
						case <-stopLoad:
							loadDone <- nil
							return
						default:
						}
						if _, _, err := l.node.Propose(ctx, fmt.Appendf(nil, "load%d=x", i)); err != nil && !errors.Is(err, ErrProposalDropped) {
							loadDone <- err
							return
						}
					}
				}()
			}
			// Only the leader ticks: its heartbeats make it retry the snapshot.
			start, ticks := time.Now(), 0
			eventually(t, 10*time.Second, func() { l.tick(); ticks++ }, func() error {
				if got := n4.node.AppliedIndex(); got < 60 {
					return fmt.Errorf("new member applied %d", got)
				}
				return nil
			})
			if load {
				close(stopLoad)
				if err := <-loadDone; err != nil {
					t.Fatal(err)
				}
			}
			rctx := ctxT(t)
			if err := n4.node.ReadIndex(rctx); err != nil {
				t.Fatal(err)
			}
			if got := n4.sm.get("k59"); got != "v59" {
				t.Fatalf("new member reads k59=%q after a linearizable read", got)
			}
			t.Logf("new member caught up and served a linearizable read in %v (%d leader ticks), %.0f snapshots on demand",
				time.Since(start), ticks, counterValue(l.node.metrics.snapshotsOnDemand))
		})
	}
}

// At a restart the directory is primed with membership changes beyond the
// applied index (issue 10); a snapshot taken before the apply loop has
// caught up would carry a membership image of a later index, so it is
// deferred.
func TestSnapshotDeferredWhileMembershipPrimedAhead(t *testing.T) {
	st := NewMemoryStorage()
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
	}
	if err := st.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(10)}, ents); err != nil {
		t.Fatal(err)
	}
	n, leader := follower(t, st, newMapSM())
	if err := n.members.decide(50, change(raftpb.ConfChangeAddNode, uint64(leader.ID)), &confContext{Member: &leader}); err != nil {
		t.Fatal(err)
	}
	err := n.snapshot(10, &raftpb.ConfState{Voters: []uint64{1}})
	if !errors.Is(err, errSnapshotDeferred) {
		t.Fatalf("snapshot at 10 with membership primed to 50: %v", err)
	}
	if snap, _ := st.Snapshot(); snap.GetMetadata().GetIndex() != 0 {
		t.Fatalf("a snapshot was stored at %d", snap.GetMetadata().GetIndex())
	}
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
