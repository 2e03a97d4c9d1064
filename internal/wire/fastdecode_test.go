package wire

import (
	"bytes"
	"encoding/binary"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func testMsgApp(n, size int) *raftpb.Message {
	m := &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
		Term: proto.Uint64(7), LogTerm: proto.Uint64(7), Index: proto.Uint64(1000), Commit: proto.Uint64(999),
	}
	for i := range n {
		m.Entries = append(m.Entries, &raftpb.Entry{
			Term: proto.Uint64(7), Index: proto.Uint64(uint64(1001 + i)), Type: raftpb.EntryNormal.Enum(),
			Data: bytes.Repeat([]byte{byte(i)}, size),
		})
	}
	return m
}

func testHeartbeat() *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
		Term: proto.Uint64(7), Commit: proto.Uint64(999),
	}
}

// fastCases are messages of every shape the fast path takes, and a few
// it leaves to protobuf.
func fastCases() (fast, slow []*raftpb.Message) {
	fast = []*raftpb.Message{
		testMsgApp(64, 128),
		testMsgApp(0, 0),
		testMsgApp(3, 0), // entries whose Data is present but empty
		{Type: raftpb.MsgApp.Enum(), Entries: []*raftpb.Entry{{}, {Data: []byte{}}}}, // entries with nothing set
		testHeartbeat(),
		{Type: raftpb.MsgHeartbeatResp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(7), Context: []byte("read-index ctx")},
		{Type: raftpb.MsgAppResp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(7),
			Index: proto.Uint64(1000), Reject: proto.Bool(true), RejectHint: proto.Uint64(990), LogTerm: proto.Uint64(6)},
		{Type: raftpb.MsgVote.Enum(), Term: proto.Uint64(0), Vote: proto.Uint64(0), Reject: proto.Bool(false), Context: []byte{}},
		{Type: raftpb.MsgForgetLeader.Enum(), To: proto.Uint64(1<<64 - 1)},
		{Entries: []*raftpb.Entry{{Type: raftpb.EntryConfChangeV2.Enum(), Data: []byte{1, 2, 3}}}},
		{},
	}
	slow = []*raftpb.Message{
		{Type: raftpb.MsgSnap.Enum(), Snapshot: &raftpb.Snapshot{Data: []byte("snap"), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(5)}}},
		{Type: raftpb.MsgStorageAppend.Enum(), Responses: []*raftpb.Message{testHeartbeat()}},
	}
	return fast, slow
}

// oneMessageBody is the body of a messages envelope holding the message
// bytes b.
func oneMessageBody(bs ...[]byte) []byte {
	body := binary.AppendUvarint(nil, uint64(len(bs)))
	for _, b := range bs {
		body = binary.AppendUvarint(body, uint64(len(b)))
		body = append(body, b...)
	}
	return body
}

func TestFastDecodeMatchesProto(t *testing.T) {
	fast, slow := fastCases()
	var all []*raftpb.Message
	var encoded [][]byte
	for i, m := range append(append([]*raftpb.Message{}, fast...), slow...) {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := isFast(b), i < len(fast); got != want {
			t.Errorf("case %d (%v): fast path %v, want %v", i, m, got, want)
		}
		got, err := DecodeMessages(oneMessageBody(b))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !proto.Equal(got[0], m) {
			t.Fatalf("case %d: decoded %v, want %v", i, got[0], m)
		}
		all = append(all, m)
		encoded = append(encoded, b)
	}
	// All of them in one envelope share the arenas.
	got, err := DecodeMessages(oneMessageBody(encoded...))
	if err != nil {
		t.Fatal(err)
	}
	for i := range all {
		if !proto.Equal(got[i], all[i]) {
			t.Fatalf("message %d of the batch: decoded %v, want %v", i, got[i], all[i])
		}
	}
}

// TestFastDecodeDoesNotAlias checks that decoded bytes are copies, and that
// appending to one entry's Data cannot overwrite its neighbour's in the
// shared buffer.
func TestFastDecodeDoesNotAlias(t *testing.T) {
	m := testMsgApp(2, 4)
	m.Context = []byte("ctx")
	b, _ := proto.Marshal(m)
	body := oneMessageBody(b, b)
	got, err := DecodeMessages(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 0xEE
	}
	for i, g := range got {
		if !proto.Equal(g, m) {
			t.Fatalf("message %d changed with the input buffer: %v", i, g)
		}
	}
	e0 := got[0].Entries[0]
	e0.Data = append(e0.Data, 9, 9, 9, 9)
	got[0].Entries = append(got[0].Entries, &raftpb.Entry{})
	if !bytes.Equal(got[0].Entries[1].Data, m.Entries[1].Data) || !proto.Equal(got[1], m) {
		t.Fatal("an append to one decoded slice changed another message or entry")
	}
}

// seedMessages are protobuf encodings near the fast path's edges.
func seedMessages() [][]byte {
	fast, slow := fastCases()
	var seeds [][]byte
	for _, m := range append(fast, slow...) {
		if len(m.Entries) > 4 {
			// Large seeds make the fuzzer spend its time minimizing them.
			m.Entries = m.Entries[:4]
		}
		b, _ := proto.Marshal(m)
		seeds = append(seeds, b)
	}
	seeds = append(seeds,
		[]byte{0x08, 0x03, 0x08, 0x04},             // repeated scalar: last wins
		[]byte{0x08, 0x83, 0x00},                   // non-minimal varint
		[]byte{0x08, 0x18},                         // MessageType 24: unknown enum value
		[]byte{0x08, 0x83, 0x80, 0x80, 0x80, 0x10}, // 3 + 1<<32: an enum above int32
		[]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // max uint64
		[]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, // varint overflow
		[]byte{0x10, 0xff},                         // truncated varint
		[]byte{0x50, 0x02},                         // reject = 2
		[]byte{0x0a, 0x00},                         // type with wire type bytes
		[]byte{0x3a, 0x02, 0x08, 0x03},             // entry with an unknown EntryType
		[]byte{0x3a, 0x03, 0x22, 0x05, 0x00},       // entry data longer than the entry
		[]byte{0x3a, 0x04, 0x22, 0x00, 0x22, 0x01}, // truncated second data
		[]byte{0x3a, 0x02, 0x22, 0x00, 0x3a, 0x00}, // two entries, one empty
		[]byte{0x78, 0x01},                         // unknown field 15
		[]byte{0x80, 0x01, 0x01},                   // unknown field 16
		[]byte{0x0b, 0x0c},                         // group
		[]byte{0x0b},                               // unterminated group
		[]byte{0x00, 0x00},                         // field number 0
		[]byte{0x0e},                               // wire type 6
		[]byte{0x62, 0x01},                         // truncated context
		[]byte{0x3a, 0x02, 0x78, 0x01},             // entry with an unknown field
		[]byte{0x4a, 0x00},                         // empty snapshot
	)
	return seeds
}

// FuzzDecodeMessages checks that, for any message bytes, DecodeMessages
// gives what proto.Unmarshal gives: the same message, or an error exactly
// when protobuf refuses them. Two messages share one envelope so that the
// arenas are shared too.
func FuzzDecodeMessages(f *testing.F) {
	seeds := seedMessages()
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)])
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		wantA, errA := decodeMessageProto(a)
		wantB, errB := decodeMessageProto(b)
		got, err := DecodeMessages(oneMessageBody(a, b))
		if (err != nil) != (errA != nil || errB != nil) {
			t.Fatalf("DecodeMessages error %v; protobuf: %v, %v", err, errA, errB)
		}
		if err != nil {
			return
		}
		if !proto.Equal(got[0], wantA) || !proto.Equal(got[1], wantB) {
			t.Fatalf("DecodeMessages gave %v, %v; protobuf %v, %v", got[0], got[1], wantA, wantB)
		}
		// Alone in an envelope, too.
		one, err := DecodeMessages(oneMessageBody(a))
		if err != nil || !proto.Equal(one[0], wantA) {
			t.Fatalf("alone: %v, %v; protobuf %v", one, err, wantA)
		}
	})
}

func benchDecodeBody(b *testing.B, msgs []*raftpb.Message, viaProto bool) {
	var bs [][]byte
	for _, m := range msgs {
		x, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		bs = append(bs, x)
	}
	body := oneMessageBody(bs...)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if viaProto {
			for _, x := range bs {
				if _, err := decodeMessageProto(x); err != nil {
					b.Fatal(err)
				}
			}
			continue
		}
		if _, err := DecodeMessages(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeMessages compares DecodeMessages with proto.Unmarshal of
// each message (what it did before the fast path) on the hot shapes.
func BenchmarkDecodeMessages(b *testing.B) {
	cases := []struct {
		name string
		msgs []*raftpb.Message
	}{
		{"MsgApp64x128", []*raftpb.Message{testMsgApp(64, 128)}},
		{"MsgApp1x128", []*raftpb.Message{testMsgApp(1, 128)}},
		{"HeartbeatBatch", []*raftpb.Message{testHeartbeat(), testMsgApp(0, 0)}},
		{"AppResp", []*raftpb.Message{{Type: raftpb.MsgAppResp.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(7), Index: proto.Uint64(1064)}}},
	}
	for _, c := range cases {
		b.Run(c.name+"/fast", func(b *testing.B) { benchDecodeBody(b, c.msgs, false) })
		b.Run(c.name+"/proto", func(b *testing.B) { benchDecodeBody(b, c.msgs, true) })
	}
}
