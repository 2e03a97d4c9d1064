package wire

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	payloads := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{1}, 300)}
	frame := AppendFrame(nil, payloads)
	var got [][]byte
	if err := DecodeFrame(frame, func(p []byte) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(payloads) {
		t.Fatalf("got %d payloads", len(got))
	}
	for i := range got {
		if !bytes.Equal(got[i], payloads[i]) {
			t.Fatalf("payload %d differs", i)
		}
		if cap(got[i]) != len(got[i]) {
			t.Fatalf("payload %d can grow into its neighbour", i)
		}
	}
}

func TestMaxPayloadFits(t *testing.T) {
	for _, maxFrame := range []int{256, 1000, 1 << 14, 1<<20 - 1024} {
		n := MaxPayload(maxFrame)
		if size := len(AppendFrame(nil, [][]byte{make([]byte, n)})); size > maxFrame {
			t.Errorf("MaxPayload(%d) = %d gives a %d-byte frame", maxFrame, n, size)
		}
		if FrameOverhead+FrameSize(n+1) <= maxFrame {
			t.Errorf("MaxPayload(%d) = %d is not the largest", maxFrame, n)
		}
	}
}

// FuzzDecodeFrame checks that no input makes DecodeFrame panic, and that
// it delivers all or nothing.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(AppendFrame(nil, [][]byte{[]byte("x"), nil}))
	f.Add([]byte{frameMagic, frameVersion, 2, 1, 'x'})
	f.Add([]byte{frameMagic, frameVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, frame []byte) {
		n := 0
		err := DecodeFrame(frame, func([]byte) { n++ })
		if err != nil && n != 0 {
			t.Fatalf("malformed frame delivered %d payloads", n)
		}
		if err != nil && !errors.Is(err, ErrBadFrame) {
			t.Fatalf("error %v does not wrap ErrBadFrame", err)
		}
	})
}

// BenchmarkAppendFrame is the copy a bus makes of each payload into its
// frame buffer (the "fewer copies" lever): one Raft envelope per frame,
// into a reused buffer.
func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{240, 9 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			p := make([][]byte, 1)
			p[0] = make([]byte, size)
			buf := AppendFrame(nil, p)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendFrame(buf[:0], p)
			}
		})
	}
}
