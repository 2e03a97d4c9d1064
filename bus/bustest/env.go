package bustest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
)

// BusConfig says which bus an Env builds. Zero limits mean the
// implementation's defaults.
type BusConfig struct {
	Cluster uuid.UUID
	Self    uuid.UUID

	MaxQueuePayloads int
	MaxQueueBytes    int
	MaxFrameBytes    int
}

// Env is one isolated network (an in-memory network, or a NATS server)
// on which a subtest builds buses.
type Env interface {
	// Prefix is the subject prefix of the buses NewBus builds.
	Prefix() string
	// NewBus builds a bus, not yet started, and closes it in t.Cleanup.
	NewBus(t *testing.T, cfg BusConfig) bus.Bus
	// Stall makes the network stop taking frames that from sends to to, so
	// that from's queue for to fills up; it may stall more than that path
	// (over NATS it stalls from's whole connection). Frames already
	// accepted must not be lost: Unstall lets them flow again.
	Stall(t *testing.T, from, to uuid.UUID)
	Unstall(t *testing.T, from, to uuid.UUID)
	// Inject publishes frame on subject as an outside client would.
	// When it returns, the network has taken the frame: a frame that a bus
	// sends afterwards reaches a common subscriber after it.
	Inject(t *testing.T, subject string, frame []byte)
}

// waitTimeout bounds every wait in the suite; it is generous because the
// suite runs under -race on small machines.
const waitTimeout = 20 * time.Second

// sendAll sends payloads from b to to in order, waiting out ErrQueueFull:
// the suite wants every payload queued, and a real caller would drop.
func sendAll(t *testing.T, b bus.Bus, to uuid.UUID, kind bus.Kind, payloads ...[]byte) {
	t.Helper()
	if err := trySendAll(b, to, kind, payloads...); err != nil {
		t.Fatal(err)
	}
}

// trySendAll is sendAll for goroutines other than the test's.
func trySendAll(b bus.Bus, to uuid.UUID, kind bus.Kind, payloads ...[]byte) error {
	deadline := time.Now().Add(waitTimeout)
	for _, p := range payloads {
		for {
			err := b.Send(to, kind, p)
			if err == nil {
				break
			}
			if !errors.Is(err, bus.ErrQueueFull) {
				return fmt.Errorf("Send: %w", err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("queue to %s stayed full for %s", to, waitTimeout)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

// busGoroutines returns the stacks of goroutines running raftbus bus code
// that are not test goroutines: what would be left behind by a bus whose
// Close did not wait. Test goroutines are recognised by testing.tRunner
// or a _test.go frame in their stack.
func busGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/raftbus/raftbus/bus/") &&
			!strings.Contains(g, "_test.go:") && !strings.Contains(g, "testing.tRunner(") {
			out = append(out, g)
		}
	}
	return out
}

// CheckNoBusGoroutines fails t if goroutines of raftbus buses are still
// running once the deadline has passed.
func CheckNoBusGoroutines(t testing.TB) {
	t.Helper()
	var left []string
	deadline := time.Now().Add(waitTimeout)
	for {
		if left = busGoroutines(); len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d bus goroutines left running:\n%s", len(left), strings.Join(left, "\n\n"))
}
