package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// child is a process the parent runs: a node or the NATS servers.
type child struct {
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *bufio.Reader
	logPath string
	exited  chan struct{}
	waitErr error
}

// spawnChild re-executes this binary in a hidden mode. Its stderr goes to
// logPath; its stdin and stdout are the parent's line-based channel to it.
func spawnChild(name, logPath string, env []string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	// A child must not outlive the parent, even if the parent is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout), logPath: logPath, exited: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// readLine decodes the child's next stdout line into v, within timeout.
func (c *child) readLine(v any, timeout time.Duration) error {
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := c.stdout.ReadBytes('\n')
		ch <- res{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("%s: %w (log: %s)", c.name, r.err, c.logTail())
		}
		if err := json.Unmarshal(r.line, v); err != nil {
			return fmt.Errorf("%s: bad line %q: %w", c.name, r.line, err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: no answer within %v (log: %s)", c.name, timeout, c.logTail())
	}
}

func (c *child) writeLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.stdin.Write(append(b, '\n'))
	return err
}

// logTail returns the end of the child's log, for error messages.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	if s == "" {
		return "empty"
	}
	return s
}

// stop asks the child to stop and waits; after timeout it is killed.
func (c *child) stop(timeout time.Duration) {
	_, _ = io.WriteString(c.stdin, "stop\n")
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// cpu returns the child's CPU time so far, or after it exited, its
// total from the kernel's accounting.
func (c *child) cpu() time.Duration {
	select {
	case <-c.exited:
		if ps := c.cmd.ProcessState; ps != nil {
			return ps.UserTime() + ps.SystemTime()
		}
		return 0
	default:
	}
	d, _ := procCPU(c.pid())
	return d
}

// clusterSpec says which cluster to run.
type clusterSpec struct {
	Transport   string
	Nodes       int
	NATSServers int // 0 for rafthttp
	Dir         string
	NoSync      bool
	Node        nodeSettings
	ProfileDir  string // empty: no profiles
	Label       string // used in profile file names
	// NATSGoMaxProcs, when positive, sets GOMAXPROCS of the NATS process.
	NATSGoMaxProcs int
	Verbose        bool
}

// cluster is a running cluster of node processes (and NATS servers).
type cluster struct {
	spec   clusterSpec
	nats   *child
	nodes  []*child
	hellos []childHello
	ids    []uint64
	leader int // index into nodes
}

// startCluster starts the NATS servers (for the raftbus transports) and the
// node processes, bootstraps a new cluster and waits for a leader.
func startCluster(ctx context.Context, spec clusterSpec) (_ *cluster, err error) {
	c := &cluster{spec: spec, leader: -1}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	var natsURLs []string
	if spec.NATSServers > 0 {
		args := []string{modeNATS, "--servers", fmt.Sprint(spec.NATSServers)}
		if spec.ProfileDir != "" {
			args = append(args, "--profile", filepath.Join(spec.ProfileDir, spec.Label+"-nats.cpu.pprof"))
		}
		var env []string
		if spec.NATSGoMaxProcs > 0 {
			env = append(env, fmt.Sprintf("GOMAXPROCS=%d", spec.NATSGoMaxProcs))
		}
		if c.nats, err = spawnChild("nats", filepath.Join(spec.Dir, "nats.log"), env, args...); err != nil {
			return nil, err
		}
		var h natsHello
		if err := c.nats.readLine(&h, 30*time.Second); err != nil {
			return nil, err
		}
		natsURLs = h.URLs
	}
	for i := range spec.Nodes {
		name := fmt.Sprintf("n%d", i+1)
		ch, err := spawnChild(name, filepath.Join(spec.Dir, name+".log"), nil, modeNode)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, ch)
	}
	clusterID := uuid.Must(uuid.NewV7())
	members := make([]childMember, spec.Nodes)
	c.hellos = make([]childHello, spec.Nodes)
	for i, ch := range c.nodes {
		if err := ch.readLine(&c.hellos[i], 30*time.Second); err != nil {
			return nil, err
		}
		members[i] = childMember{ID: uint64(i + 1), Name: ch.name, Incarnation: uuid.Must(uuid.NewV7()), PeerURL: c.hellos[i].PeerURL}
		c.ids = append(c.ids, uint64(i+1))
	}
	var seed string
	for i, ch := range c.nodes {
		cfg := childNodeConfig{
			Transport: spec.Transport, Cluster: clusterID, ID: members[i].ID, Incarnation: members[i].Incarnation,
			Members: members, DataDir: filepath.Join(spec.Dir, ch.name), NoSync: spec.NoSync, Node: spec.Node,
			Verbose: spec.Verbose,
		}
		if len(natsURLs) > 0 {
			// Across a NATS cluster each node talks to its own server.
			cfg.NATSURL = natsURLs[i%len(natsURLs)]
		}
		if spec.ProfileDir != "" {
			cfg.ProfilePrefix = filepath.Join(spec.ProfileDir, fmt.Sprintf("%s-%s", spec.Label, ch.name))
		}
		cfg.NATSSeedRoute = seed
		if err := ch.writeLine(cfg); err != nil {
			return nil, fmt.Errorf("%s: send config: %w", ch.name, err)
		}
		if spec.Transport == transportEmbedded {
			// The first node's server is the seed the others route to.
			var r childRoute
			if err := ch.readLine(&r, 30*time.Second); err != nil {
				return nil, err
			}
			if r.Route == "" {
				return nil, fmt.Errorf("%s: embedded NATS server failed (log: %s)", ch.name, ch.logTail())
			}
			if seed == "" {
				seed = r.Route
			}
		}
	}
	for _, ch := range c.nodes {
		var r childReady
		if err := ch.readLine(&r, 30*time.Second); err != nil {
			return nil, err
		}
		if !r.Ready {
			return nil, fmt.Errorf("%s: %s", ch.name, r.Error)
		}
	}
	if err := c.waitLeader(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// waitLeader polls every node until all name the same leader, the leader
// agrees, and one proposal through it commits.
func (c *cluster) waitLeader(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	clients := make([]*ctlClient, len(c.nodes))
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	for i, h := range c.hellos {
		cl, err := dialCtl(h.Ctl)
		if err != nil {
			return fmt.Errorf("%s: %w", c.nodes[i].name, err)
		}
		clients[i] = cl
	}
	var last string
	for {
		var lead uint64
		agree := true
		for i, cl := range clients {
			st, err := cl.status(5 * time.Second)
			if err != nil {
				return fmt.Errorf("%s: status: %w", c.nodes[i].name, err)
			}
			if st.Leader == 0 || (lead != 0 && st.Leader != lead) {
				agree = false
			}
			lead = st.Leader
		}
		if agree && lead != 0 {
			idx := int(lead - 1)
			if _, _, err := clients[idx].put("bench-ready", []byte("1"), 5*time.Second); err == nil {
				c.leader = idx
				return nil
			} else {
				last = err.Error()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader within %v (last error: %s)", within, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *cluster) leaderTarget() target {
	h := c.hellos[c.leader]
	return target{ctl: h.Ctl, httpURL: h.HTTPURL}
}

// cpu samples the CPU time of every node and of the NATS process.
func (c *cluster) cpu() (nodes []time.Duration, broker time.Duration) {
	for _, n := range c.nodes {
		nodes = append(nodes, n.cpu())
	}
	if c.nats != nil {
		broker = c.nats.cpu()
	}
	return nodes, broker
}

// statuses asks every node for its status (leader, applied, save stats).
func (c *cluster) statuses() []ctlStatus {
	out := make([]ctlStatus, len(c.nodes))
	for i, h := range c.hellos {
		cl, err := dialCtl(h.Ctl)
		if err != nil {
			continue
		}
		out[i], _ = cl.status(5 * time.Second)
		cl.Close()
	}
	return out
}

// peakRSS returns each node's and the NATS process's VmHWM.
func (c *cluster) peakRSS() (nodes []int64, broker int64) {
	for _, n := range c.nodes {
		_, peak, _ := procMem(n.pid())
		nodes = append(nodes, peak)
	}
	if c.nats != nil {
		_, broker, _ = procMem(c.nats.pid())
	}
	return nodes, broker
}

// stop stops the nodes together (they write their profiles on the way out),
// then the NATS servers.
func (c *cluster) stop() {
	done := make(chan struct{})
	for _, n := range c.nodes {
		go func() { n.stop(20 * time.Second); done <- struct{}{} }()
	}
	for range c.nodes {
		<-done
	}
	if c.nats != nil {
		c.nats.stop(20 * time.Second)
	}
}

// exitErrors collects the children that exited with an error.
func (c *cluster) exitErrors() error {
	var errs []error
	for _, n := range append(append([]*child{}, c.nodes...), c.nats) {
		if n == nil {
			continue
		}
		select {
		case <-n.exited:
			if n.waitErr != nil {
				errs = append(errs, fmt.Errorf("%s: %w (log: %s)", n.name, n.waitErr, n.logTail()))
			}
		default:
		}
	}
	return errors.Join(errs...)
}
