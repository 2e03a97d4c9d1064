package node

import (
	"errors"
	"testing"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/internal/nodehook"
	"github.com/raftbus/raftbus/raftbridge"
)

func change(t raftpb.ConfChangeType, id uint64) *raftpb.ConfChangeV2 {
	return &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: t.Enum(), NodeId: proto.Uint64(id)}}}
}

func addCtx(id uint64, inc uuid.UUID, req string) *confContext {
	return &confContext{Member: &Member{ID: raftbridge.ID(id), Incarnation: inc}, RequestID: req}
}

func TestMembershipVerdicts(t *testing.T) {
	ms := newMembership()
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	steps := []struct {
		index uint64
		cc    *raftpb.ConfChangeV2
		ctx   *confContext
		want  error
	}{
		{1, change(raftpb.ConfChangeAddNode, 1), addCtx(1, a, ""), nil},
		{2, change(raftpb.ConfChangeAddNode, 2), addCtx(2, b, "r2"), nil},
		{3, change(raftpb.ConfChangeAddNode, 3), addCtx(3, a, "r3"), ErrInvalidChange}, // incarnation already a member
		{4, change(raftpb.ConfChangeAddNode, 2), addCtx(2, c, "r4"), ErrInvalidChange}, // ID taken
		{5, change(raftpb.ConfChangeAddNode, 9), addCtx(9, c, "r2"), ErrDuplicateRequest},
		{6, change(raftpb.ConfChangeRemoveNode, 7), &confContext{RequestID: "r6"}, ErrNoSuchMember},
		{7, change(raftpb.ConfChangeRemoveNode, 2), &confContext{RequestID: "r7"}, nil},
		{8, change(raftpb.ConfChangeAddNode, 4), addCtx(4, b, "r8"), ErrTombstoned}, // removed incarnation
		{9, change(raftpb.ConfChangeAddNode, 2), addCtx(2, c, "r9"), ErrTombstoned}, // removed ID
		{10, change(raftpb.ConfChangeRemoveNode, 1), &confContext{RequestID: "r10"}, ErrLastVoter},
		{11, change(raftpb.ConfChangeAddNode, 1), nil, ErrInvalidChange}, // promote a voter
	}
	for _, s := range steps {
		err := ms.decide(s.index, s.cc, s.ctx)
		if (s.want == nil) != (err == nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Fatalf("index %d: verdict %v, want %v", s.index, err, s.want)
		}
	}
	// Replays return the recorded verdict and change nothing.
	before := ms.image()
	for _, s := range steps {
		err := ms.decide(s.index, s.cc, s.ctx)
		if (s.want == nil) != (err == nil) {
			t.Fatalf("replay of index %d: %v, first verdict %v", s.index, err, s.want)
		}
	}
	after := ms.image()
	if len(after.History) != len(before.History) || after.Version != before.Version {
		t.Fatalf("replay changed the history: %d -> %d entries", len(before.History), len(after.History))
	}
	if !ms.RemovedID(2) || !ms.RemovedIncarnation(b) {
		t.Fatal("removed member not tombstoned")
	}
	// Tombstones and the history survive a snapshot.
	data, err := encodeSnapshot(snapshotImage{members: ms.image()}, []byte("sm"))
	if err != nil {
		t.Fatal(err)
	}
	img, sm, err := decodeSnapshot(data)
	if err != nil || string(sm) != "sm" {
		t.Fatalf("decode: %v %q", err, sm)
	}
	restored := newMembership()
	if err := restored.restore(img.members); err != nil {
		t.Fatal(err)
	}
	if !restored.RemovedID(2) || !restored.RemovedIncarnation(b) || restored.Version() != ms.Version() || len(restored.history) != len(ms.history) {
		t.Fatal("snapshot lost tombstones, version or history")
	}
	if restored.maxID != 2 {
		t.Fatalf("max ID %d, want 2", restored.maxID)
	}
}

func TestDecodeSnapshotRejectsGarbage(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("RBSN"), []byte("XXXX\x01\x00\x00\x00\x00"), []byte("RBSN\x01\xff\xff\xff\xff{}")} {
		if _, _, err := decodeSnapshot(data); !errors.Is(err, errBadSnapshot) {
			t.Fatalf("%q: %v", data, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{}
	if err := c.validate(); err == nil {
		t.Fatal("empty config accepted")
	}
	inc := uuid.New()
	c = Config{Cluster: uuid.New(), ID: 1, Incarnation: inc, Storage: NewMemoryStorage(), StateMachine: nopSM{},
		newTransport: func(nodehook.Peer) (nodehook.Transport, error) { return nil, nil },
		Peers:        []Member{{ID: 2, Incarnation: uuid.New()}}}
	if err := c.validate(); err == nil {
		t.Fatal("peers without this node accepted")
	}
	c.Peers = append(c.Peers, Member{ID: 1, Incarnation: inc})
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.TickInterval == 0 || c.SnapshotEntries == 0 {
		t.Fatal("defaults not filled")
	}
}

type nopSM struct{}

func (nopSM) Apply(uint64, []byte) (any, error) { return nil, nil }
func (nopSM) Snapshot() ([]byte, error)         { return nil, nil }
func (nopSM) Restore([]byte) error              { return nil }
