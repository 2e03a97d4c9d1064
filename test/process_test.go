package test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a raftbus process started by a test.
type proc struct {
	name     string
	cmd      *exec.Cmd
	out, err lineBuffer
	done     chan struct{}
	exitCode int
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(raftbusBinary(t), args...), done: make(chan struct{})}
	p.cmd.Env = cleanEnv()
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s\n--- %s stderr (last 40 lines):\n%s", p.name, p.out.text(), p.name, lastLines(p.err.text(), 40))
		}
	})
	return p
}

// cleanEnv keeps the NATS_* and RAFTBUS_* variables of the developer's
// shell from leaking into the processes under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "RAFTBUS_") {
			env = append(env, kv)
		}
	}
	return env
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the process to end and returns its exit code.
func (p *proc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v", p.name, within)
	}
	return -1
}

// interrupt sends SIGINT and waits for the exit code.
func (p *proc) interrupt(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	return p.waitExit(t, 30*time.Second)
}

func (p *proc) waitOutput(t *testing.T, within time.Duration, substr string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.out.text(), substr) {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: %q not printed (exited %v); stdout:\n%s\nstderr:\n%s", p.name, substr, p.exited(), p.out.text(), lastLines(p.err.text(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// panicked reports whether the process's output shows a Go panic.
func (p *proc) panicked() bool {
	all := p.out.text() + "\n" + p.err.text()
	return strings.Contains(all, "panic:") || strings.Contains(all, "goroutine ") && strings.Contains(all, "[running]")
}

// cli runs a raftbus command to completion.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(raftbusBinary(t), args...)
	cmd.Env = cleanEnv()
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run raftbus %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runBinary(t, args...)
	if code != 0 {
		t.Fatalf("raftbus %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func localURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
