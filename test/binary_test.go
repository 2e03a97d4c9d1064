package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftbus/raftbus/internal/testnats"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// raftbusBinary builds cmd/raftbus once per test binary run.
func raftbusBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "raftbus-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "raftbus")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/raftbus/raftbus/cmd/raftbus").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// lineBuffer collects a process's output and lets a test wait for a line.
type lineBuffer struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
}

func (b *lineBuffer) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		b.mu.Lock()
		b.lines = append(b.lines, sc.Text())
		b.mu.Unlock()
	}
}

// Write makes a lineBuffer usable as a process's Stdout or Stderr, so that
// exec.Cmd.Wait returns only after all output was collected.
func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
	}
	return len(p), nil
}

func (b *lineBuffer) text() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// Reference node test 5: `raftbus up` as a real process. It comes up with
// three nodes, a write on one node is readable on another, and SIGINT stops
// it with exit code 0, leaving no process behind.
func TestUpBinary(t *testing.T) {
	bin := raftbusBinary(t)
	data := t.TempDir()
	cmd := exec.Command(bin, "up", "--nodes", "3", "--data", data, "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut lineBuffer
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go out.consume(stdout)
	go errOut.consume(stderr)

	urlRe := regexp.MustCompile(`http://127\.0\.0\.1:\d+`)
	var urls []string
	testnats.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(out.text(), "Press Ctrl-C to stop") {
			return fmt.Errorf("not up yet; stdout:\n%s\nstderr:\n%s", out.text(), errOut.text())
		}
		urls = nil
		for _, line := range strings.Split(out.text(), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "n") {
				if u := urlRe.FindString(line); u != "" {
					urls = append(urls, u)
				}
			}
		}
		if len(urls) != 3 {
			return fmt.Errorf("found %d node URLs in:\n%s", len(urls), out.text())
		}
		return nil
	})
	if _, _, err := put(urls[0], "greeting", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Get(urls[2] + "/kv/greeting")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"value":"hello"`) {
		t.Fatalf("read on another node: %d %s", resp.StatusCode, body)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("raftbus up exited with %v; stderr:\n%s", err, errOut.text())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("raftbus up did not exit within 30s of SIGINT; stdout:\n%s", out.text())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if err := syscall.Kill(cmd.Process.Pid, 0); err == nil {
		t.Fatalf("process %d still exists after exit", cmd.Process.Pid)
	}
	if strings.Contains(errOut.text(), "panic") {
		t.Fatalf("stderr mentions a panic:\n%s", errOut.text())
	}
	// Its HTTP ports are closed: nothing keeps serving.
	for _, u := range urls {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/status", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			cancel()
			t.Fatalf("%s still answers after exit", u)
		}
		cancel()
	}
	// The kept data directory resumes the same cluster, data included.
	again := exec.Command(bin, "up", "--nodes", "3", "--data", data, "--log-level", "warn")
	var out2, err2 lineBuffer
	again.Stdout, again.Stderr = &out2, &err2
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Process.Kill() })
	clusterRe := regexp.MustCompile(`raftbus cluster ([0-9a-f-]{36}) is up`)
	first := clusterRe.FindStringSubmatch(out.text())
	testnats.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(out2.text(), "Press Ctrl-C to stop") {
			return fmt.Errorf("second run not up; stdout:\n%s\nstderr:\n%s", out2.text(), err2.text())
		}
		return nil
	})
	second := clusterRe.FindStringSubmatch(out2.text())
	if first == nil || second == nil || first[1] != second[1] {
		t.Fatalf("--data did not resume the cluster: first %v, second %v", first, second)
	}
	u := urlRe.FindString(out2.text()[strings.Index(out2.text(), "NAME"):])
	resp, err = httpClient.Get(u + "/kv/greeting")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"value":"hello"`) {
		t.Fatalf("the resumed cluster lost its data: %d %s", resp.StatusCode, body)
	}
	_ = again.Process.Signal(syscall.SIGINT)
	if err := again.Wait(); err != nil {
		t.Fatalf("second raftbus up exited with %v", err)
	}
}
