package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftbus/raftbus/internal/testnats"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runningUp is an in-process 'raftbus up'.
type runningUp struct {
	out, err lockedBuffer
	cancel   context.CancelFunc
	code     chan int
}

func startUp(t *testing.T, args ...string) *runningUp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	u := &runningUp{cancel: cancel, code: make(chan int, 1)}
	go func() { u.code <- Main(ctx, append([]string{"up", "--no-sync"}, args...), &u.out, &u.err) }()
	t.Cleanup(func() { cancel(); <-u.code })
	return u
}

// waitUp waits until the cluster is up, or fails with the output.
func (u *runningUp) waitUp(t *testing.T) {
	t.Helper()
	testnats.Eventually(t, 30*time.Second, func() error {
		select {
		case code := <-u.code:
			u.code <- code
			t.Fatalf("up exited %d:\n%s\nstderr:\n%s", code, u.out.String(), u.err.String())
		default:
		}
		if !strings.Contains(u.out.String(), "Press Ctrl-C to stop") {
			return os.ErrNotExist
		}
		return nil
	})
}

func (u *runningUp) stop(t *testing.T) int {
	t.Helper()
	u.cancel()
	select {
	case code := <-u.code:
		u.code <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("up did not stop")
	}
	return -1
}

// A first 'up' that fails (here: --nats-port taken) says why at once, and
// running it again starts the cluster it created instead of refusing it
// with "never started" (the FIRST_START record makes the retry bootstrap).
func TestUpRetriesAFailedFirstStart(t *testing.T) {
	isolateEnv(t)
	data := filepath.Join(t.TempDir(), "c")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	start := time.Now()
	out, errOut, code := runCLI(t, "up", "--no-sync", "--nodes", "1", "--data", data, "--nats-port", port)
	ln.Close()
	if code == 0 || !strings.Contains(errOut, "--nats-port "+port) || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("port taken: exit %d\n%s\nstderr:\n%s", code, out, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a taken port took %v to report", d)
	}
	u := startUp(t, "--nodes", "1", "--data", data)
	u.waitUp(t)
	if !strings.Contains(u.out.String(), "retrying the first start of cluster") {
		t.Fatalf("the retry did not say so:\n%s", u.out.String())
	}
	if code := u.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, u.err.String())
	}
}

// 'up' is quiet (node logs go to the log file), locks its directory before
// it starts anything, and says when it resumed a cluster.
func TestUpQuietLockedResumed(t *testing.T) {
	isolateEnv(t)
	data := filepath.Join(t.TempDir(), "c")
	u := startUp(t, "--nodes", "1", "--data", data)
	u.waitUp(t)

	// A second 'up' on the same directory is refused before it starts a
	// NATS server on the same JetStream store.
	out, errOut, code := runCLI(t, "up", "--nodes", "1", "--data", data)
	if code != ExitPrecondition || !strings.Contains(errOut, "in use by another process") || strings.Contains(out, "starting embedded NATS") {
		t.Fatalf("second up: exit %d\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code := u.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, u.err.String())
	}
	// Warnings and errors may reach stderr by design; the info stream of
	// the nodes (dozens of lines per start) must not.
	if s := u.err.String(); strings.Contains(s, "level=INFO") || strings.Contains(s, "level=DEBUG") {
		t.Fatalf("up wrote its info logs to stderr:\n%s", s)
	}
	if strings.Contains(u.out.String(), "level=") {
		t.Fatalf("log lines among the progress:\n%s", u.out.String())
	}
	log, err := os.ReadFile(filepath.Join(data, upLogFile))
	if err != nil || !bytes.Contains(log, []byte("level=INFO")) {
		t.Fatalf("log file: %v\n%s", err, log)
	}
	if !strings.Contains(u.out.String(), "Logs: "+filepath.Join(data, upLogFile)) {
		t.Fatalf("the log file is not named:\n%s", u.out.String())
	}

	again := startUp(t, "--nodes", "1", "--data", data)
	again.waitUp(t)
	if !strings.Contains(again.out.String(), "resumed cluster ") || !strings.Contains(again.out.String(), " from "+data) {
		t.Fatalf("no resume line:\n%s", again.out.String())
	}
	again.stop(t)
}
