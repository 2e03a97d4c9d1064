package membership

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/internal/testnats"
)

// party is one incarnation with its key.
type party struct {
	inc uuid.UUID
	kp  nkeys.KeyPair
	pub string
}

func newParty(t *testing.T) party {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return party{inc: uuid.Must(uuid.NewV7()), kp: kp, pub: pub}
}

func (p party) member(id HexID, name string) Member {
	return Member{ID: id, Name: name, Incarnation: p.inc, PublicKey: p.pub}
}

// forgeryFixture is a stream holding a two-member cluster's bootstrap,
// written by n1, the leader.
type forgeryFixture struct {
	t       *testing.T
	js      jetstream.JetStream
	cluster uuid.UUID
	n1, n2  party
	leader  *Stream // writes as n1
}

func newForgeryFixture(t *testing.T) *forgeryFixture {
	ns := testnats.Run(t, nil)
	js, err := jetstream.New(testnats.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	f := &forgeryFixture{t: t, js: js, cluster: uuid.New(), n1: newParty(t), n2: newParty(t)}
	ctx := context.Background()
	f.leader, err = CreateStream(ctx, f.streamConfig(f.n1))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []Member{f.n1.member(1, "n1"), f.n2.member(2, "n2")} {
		if err := f.leader.PublishCommitted(ctx, Committed{Index: uint64(i + 1), Op: OpAdd, Member: m, Version: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *forgeryFixture) streamConfig(as party) StreamConfig {
	return StreamConfig{JS: f.js, Cluster: f.cluster, Incarnation: as.inc, Signer: as.kp}
}

func (f *forgeryFixture) subject(parts ...string) string {
	return "raftbus." + f.cluster.String() + ".members." + strings.Join(parts, ".")
}

// raw publishes data on subject, signed by kp if it is not nil.
func (f *forgeryFixture) raw(subject string, data []byte, kp nkeys.KeyPair) {
	f.t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data}
	if kp != nil {
		h, err := sign(kp, subject, data)
		if err != nil {
			f.t.Fatal(err)
		}
		msg.Header = h
	}
	if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
		f.t.Fatal(err)
	}
}

func (f *forgeryFixture) removal(index uint64, m Member) []byte {
	b, err := json.Marshal(Record{V: 1, Kind: KindCommitted, Time: time.Now().UTC(), Cluster: f.cluster,
		Committed: &Committed{Index: index, Op: OpRemove, Member: m, Version: index}})
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// forgeAll writes one forged removal of n2 of each kind, and forged
// outcomes; it returns the rejection counts readers must report.
func (f *forgeryFixture) forgeAll() map[string]int {
	stranger := newParty(f.t)
	victim := f.n2.member(2, "n2")
	body := f.removal(10, victim)
	// Unsigned, on the leader's subject.
	f.raw(f.subject("committed", f.n1.inc.String()), body, nil)
	// Signed by a key that is no member's, on its own subject.
	f.raw(f.subject("committed", stranger.inc.String()), body, stranger.kp)
	// Signed by a member's key (n2's) on another incarnation's subject.
	f.raw(f.subject("committed", f.n1.inc.String()), body, f.n2.kp)
	// A signature that does not verify: n1's key named, garbage signature.
	h := nats.Header{}
	h.Set(HeaderSigner, f.n1.pub)
	h.Set(HeaderSig, base64.RawURLEncoding.EncodeToString(make([]byte, 64)))
	if _, err := f.js.PublishMsg(context.Background(), &nats.Msg{Subject: f.subject("committed", f.n1.inc.String()), Data: body, Header: h}); err != nil {
		f.t.Fatal(err)
	}
	// Malformed JSON, validly signed by the leader even.
	f.raw(f.subject("committed", f.n1.inc.String()), []byte(`{"v":1,"kind":"committed","committed":`), f.n1.kp)
	// A malformed request (requests are read by the leader).
	f.raw(f.subject("request"), []byte("not json"), nil)
	// An outcome signed by a stranger, and an unsigned one.
	out, _ := json.Marshal(Record{V: 1, Kind: KindOutcome, Cluster: f.cluster, Outcome: &Outcome{RequestID: "r1", Status: StatusApplied}})
	f.raw(f.subject("outcome", "r1", stranger.inc.String()), out, stranger.kp)
	f.raw(f.subject("outcome", "r1", f.n1.inc.String()), out, nil)
	return map[string]int{RejectUnsigned: 2, RejectNotAuthorized: 2, RejectWrongSource: 1, RejectBadSignature: 1, RejectMalformed: 2}
}

// Forged and malformed records are skipped and counted by reason; they
// never make reading fail (the old code failed every read on a malformed
// record and applied any forged removal).
func TestForgedRecordsAreRejectedAndCounted(t *testing.T) {
	f := newForgeryFixture(t)
	want := f.forgeAll()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reader, err := OpenStream(ctx, StreamConfig{JS: f.js, Cluster: f.cluster})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := reader.ReadAll(ctx)
	if err != nil {
		t.Fatalf("ReadAll fails on forged records: %v", err)
	}
	d := Rebuild(recs)
	if len(d.Members) != 2 || d.Members[2] == nil || d.RemovedIDs[2] {
		t.Fatalf("a forged removal took effect: members %v, removed %v", d.Members, d.RemovedIDs)
	}
	got := d.RejectedCounts()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rejections %v, want %v; rejected %+v", got, want, d.Rejected)
	}
	for _, rr := range d.Rejected {
		if rr.Seq == 0 || rr.Subject == "" || rr.Reason == "" || rr.Problem == "" {
			t.Fatalf("incomplete rejection %+v", rr)
		}
	}
	// The leader's view of what it published ignores the forgeries.
	if idx, err := reader.CommittedIndex(ctx); err != nil || idx != 2 {
		t.Fatalf("CommittedIndex = %d, %v; want 2", idx, err)
	}
	// An outcome is accepted only from a member.
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := reader.WaitOutcome(wctx, "r1", d); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("forged outcome accepted: %v", err)
	}
	wcancel()
	if err := f.leader.PublishOutcome(ctx, Outcome{RequestID: "r1", Status: StatusRejected, Code: CodeConflict, Reason: "real"}); err != nil {
		t.Fatal(err)
	}
	if o, err := reader.WaitOutcome(ctx, "r1", d); err != nil || o.Reason != "real" {
		t.Fatalf("WaitOutcome = %+v, %v; want the leader's", o, err)
	}
	// A reader without a key cannot write node records.
	if err := reader.PublishCommitted(ctx, Committed{Index: 3}); !errors.Is(err, ErrNoSigner) {
		t.Fatalf("unsigned write: %v, want ErrNoSigner", err)
	}
}

// fakeCluster is the node side of a manager that never leads.
type fakeCluster struct {
	self    HexID
	inc     uuid.UUID
	mu      sync.Mutex
	removed []string
	ch      chan string
}

func (c *fakeCluster) Self() (HexID, uuid.UUID)      { return c.self, c.inc }
func (c *fakeCluster) Leader() HexID                 { return 0 }
func (c *fakeCluster) State() State                  { return State{} }
func (c *fakeCluster) Barrier(context.Context) error { return nil }
func (c *fakeCluster) Change(context.Context, Decision) (uint64, error) {
	return 0, errors.New("not the leader")
}
func (c *fakeCluster) Reject(context.Context, Decision, string, string) (uint64, error) {
	return 0, errors.New("not the leader")
}
func (c *fakeCluster) Bind(context.Context, string, time.Time) error { return nil }
func (c *fakeCluster) Rebind(context.Context, Decision, string, time.Time) (uint64, error) {
	return 0, errors.New("not the leader")
}
func (c *fakeCluster) TransferLeadership(context.Context) error { return nil }
func (c *fakeCluster) CaughtUp(HexID) bool                      { return false }
func (c *fakeCluster) Removed(reason string) {
	c.mu.Lock()
	c.removed = append(c.removed, reason)
	c.mu.Unlock()
	c.ch <- reason
}

// A node stops itself only on a verified removal naming its Raft ID and
// incarnation: the forged removals before it (the old code stopped on the
// first, and on every restart) and a verified removal of another
// incarnation under its Raft ID are ignored.
func TestFollowerStopsOnlyOnVerifiedRemoval(t *testing.T) {
	f := newForgeryFixture(t)
	f.forgeAll()
	ctx := context.Background()
	// A verified record removing Raft ID 2 but another incarnation.
	other := f.n2.member(2, "n2")
	other.Incarnation = uuid.Must(uuid.NewV7())
	if err := f.leader.PublishCommitted(ctx, Committed{Index: 11, Op: OpRemove, Member: other, Version: 11}); err != nil {
		t.Fatal(err)
	}
	c := &fakeCluster{self: 2, inc: f.n2.inc, ch: make(chan string, 4)}
	m, err := StartManager(ManagerConfig{Stream: StreamConfig{JS: f.js, Cluster: f.cluster}, Cluster: c, Signer: f.n2.kp,
		Announce: Announce{Name: "n2"}, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	// The real removal, committed later.
	if err := f.leader.PublishCommitted(ctx, Committed{Index: 12, Op: OpRemove, Member: f.n2.member(2, "n2"), Version: 12}); err != nil {
		t.Fatal(err)
	}
	select {
	case reason := <-c.ch:
		if !strings.Contains(reason, "index 12") {
			t.Fatalf("stopped for %q; want the verified removal at index 12", reason)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the verified removal did not stop the node")
	}
	counts := m.Rejected()
	if counts[RejectUnsigned] != 1 || counts[RejectNotAuthorized] != 1 || counts[RejectWrongSource] != 1 ||
		counts[RejectBadSignature] != 1 || counts[RejectMalformed] != 1 {
		t.Fatalf("follower rejection counts %v", counts)
	}
	// The node's announcement is signed and carries its key.
	recs, err := f.leader.ReadAll(ctx, KindAnnounce)
	if err != nil {
		t.Fatal(err)
	}
	d := Rebuild(recs)
	if a, ok := d.Announced[f.n2.inc]; !ok || a.PublicKey != f.n2.pub || len(d.Rejected) != 0 {
		t.Fatalf("announcement %+v %v, rejected %+v", a, ok, d.Rejected)
	}
}
