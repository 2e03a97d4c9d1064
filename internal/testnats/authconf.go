package testnats

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Violations counts the permission violations a server logs: publishes
// and subscriptions its users' permissions refused.
type Violations struct {
	mu    sync.Mutex
	lines []string
}

// Count is the number of violations so far.
func (v *Violations) Count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.lines)
}

// Lines are the logged violations.
func (v *Violations) Lines() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// violationLogger is a server.Logger that records violations only.
type violationLogger struct{ v *Violations }

func (l violationLogger) record(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "Violation") && !strings.Contains(msg, "Authorization") {
		l.v.mu.Lock()
		l.v.lines = append(l.v.lines, msg)
		l.v.mu.Unlock()
	}
}

func (l violationLogger) Noticef(string, ...any)    {}
func (l violationLogger) Warnf(f string, a ...any)  { l.record(f, a...) }
func (l violationLogger) Fatalf(f string, a ...any) { l.record(f, a...) }
func (l violationLogger) Errorf(f string, a ...any) { l.record(f, a...) }
func (l violationLogger) Debugf(string, ...any)     {}
func (l violationLogger) Tracef(string, ...any)     {}

// RunWithConfig starts a JetStream server configured by conf, a
// nats-server configuration text (such as a generated authorization
// block), parsed exactly as nats-server parses its file. Listen address,
// store and limits are the test defaults of Options. The returned
// Violations counts every permission violation the server logs.
func RunWithConfig(t testing.TB, conf string) (*server.Server, *Violations) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server config: %v\n%s", err, conf)
	}
	def := Options(t)
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = def.Host, def.Port, true, true
	opts.JetStream, opts.StoreDir = true, def.StoreDir
	opts.JetStreamMaxMemory, opts.JetStreamMaxStore = def.JetStreamMaxMemory, def.JetStreamMaxStore
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	v := &Violations{}
	s.SetLoggerV2(violationLogger{v}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s, v
}
