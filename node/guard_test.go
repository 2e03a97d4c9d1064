package node

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const forgedEnv = "RAFTBUS_NODE_FORGED_CHILD"

// Forged messages that etcd raft panics on must be refused by Process, not
// crash the node. Raft panics on its own goroutine, which no recover can
// reach, so the forgeries are stepped in a child process (this test binary
// again) and the parent checks that it survived.
func TestForgedMessagesDoNotPanic(t *testing.T) {
	if os.Getenv(forgedEnv) != "" {
		forgedChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestForgedMessagesDoNotPanic$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), forgedEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "survived every forgery") {
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

func forgedChild(t *testing.T) {
	// A follower with an empty log: a heartbeat from its leader's ID
	// claiming commit 1e9 (issue 9), and an append whose entries do not
	// follow its Index.
	f, _ := follower(t, NewMemoryStorage(), newMapSM())
	forgeries := []*raftpb.Message{
		{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(1), Commit: proto.Uint64(1e9)},
		{Type: raftpb.MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(1), Index: proto.Uint64(0), LogTerm: proto.Uint64(0),
			Commit: proto.Uint64(5), Entries: []*raftpb.Entry{{Index: proto.Uint64(5), Term: proto.Uint64(1)}}},
	}
	for _, m := range forgeries {
		if err := f.Process(ctxT(t), m); !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("%s: Process = %v, want ErrInvalidMessage", m.GetType(), err)
		}
	}
	// A snapshot naming this node both voter and learner.
	snap := leaderSnapshot(t, Member{ID: 1, Incarnation: uuid.New()}, 2, 10, []byte("{}"))
	snap.Snapshot.Metadata.ConfState.Learners = []uint64{2}
	if err := f.ReceiveSnapshot(ctxT(t), snap); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("MsgSnap: ReceiveSnapshot = %v, want ErrInvalidMessage", err)
	}
	// A leader: an empty proposal, and one with an undecodable membership
	// change, forwarded as if by a follower.
	h := newHarness(t, nil)
	h.bootstrap(1)
	l := h.elect(1)
	props := []*raftpb.Message{
		{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1)},
		{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Entries: []*raftpb.Entry{{Type: raftpb.EntryConfChangeV2.Enum(), Data: []byte{0xff, 0xff}}}},
	}
	for _, m := range props {
		if err := l.node.Process(ctxT(t), m); !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("%s: Process = %v, want ErrInvalidMessage", m.GetType(), err)
		}
	}
	// Both nodes still work: Raft's goroutines are alive.
	_ = f.raft.Status()
	if _, _, err := l.node.Propose(ctxT(t), []byte("k=v")); err != nil {
		t.Fatal(err)
	}
	t.Log("survived every forgery")
}

// A legitimate heartbeat (commit within the stored log) is still stepped.
func TestHeartbeatWithinLogAccepted(t *testing.T) {
	f, _ := follower(t, NewMemoryStorage(), newMapSM())
	hb := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(1), Commit: proto.Uint64(0)}
	if err := f.Process(ctxT(t), hb); err != nil {
		t.Fatal(err)
	}
}
