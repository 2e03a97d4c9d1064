package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftbus/raftbus/bus/natsbus"
	"github.com/raftbus/raftbus/raftbridge"
)

// Section 4: a streamed snapshot transfer (raftbridge with a
// FileSnapshotStore on each side, over natsbus) against raw NATS publish of
// the same bytes in messages of the same size through the same server. The
// two bridges, the raw publisher and the raw subscriber each run in a child
// process of their own, so that each side's RSS growth is read from /proc.

// modeSnap is the hidden mode of a snapshot-section child.
const modeSnap = "__snap"

// Goals of issue 12.
const (
	snapGoalRatio     = 0.70
	snapGoalRSSGrowth = 64 << 20
)

// init lets any binary built from this package, the test binary included,
// play a snapshot-section child without a case in main or TestMain.
func init() {
	if len(os.Args) > 1 && os.Args[1] == modeSnap {
		if err := runSnapChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench snapshot child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Roles of snapshot-section children.
const (
	snapRoleSend   = "send"
	snapRoleRecv   = "recv"
	snapRoleRawPub = "rawpub"
	snapRoleRawSub = "rawsub"
)

// snapChildConfig is the line the parent writes to a snapshot child.
type snapChildConfig struct {
	Role    string    `json:"role"`
	NATSURL string    `json:"nats_url"`
	Cluster uuid.UUID `json:"cluster"`
	Sender  uuid.UUID `json:"sender"`   // incarnation of Raft ID 1
	Recv    uuid.UUID `json:"receiver"` // incarnation of Raft ID 2
	Dir     string    `json:"dir"`
	Bytes   int64     `json:"bytes"`
	Msg     int       `json:"msg_bytes"` // raw message size
	Subject string    `json:"subject"`   // raw subject
	Window  int       `json:"window"`
	// Profile, if set, is where the child writes its CPU profile.
	Profile string `json:"profile,omitempty"`
}

// snapChildLine is every line a snapshot child prints.
type snapChildLine struct {
	PID    int    `json:"pid,omitempty"`
	Ready  bool   `json:"ready,omitempty"`
	Done   bool   `json:"done,omitempty"`
	Status string `json:"status,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Error  string `json:"error,omitempty"`
}

// snapResult is the section's outcome.
type snapResult struct {
	Bytes            int64   `json:"bytes"`
	EnvelopeBytes    int     `json:"envelope_bytes"`
	Window           int     `json:"window"`
	SnapSeconds      float64 `json:"snapshot_seconds"`
	SnapMiBps        float64 `json:"snapshot_mib_per_sec"`
	RawSeconds       float64 `json:"raw_seconds"`
	RawMiBps         float64 `json:"raw_mib_per_sec"`
	Ratio            float64 `json:"ratio"`
	SenderRSSMiB     float64 `json:"sender_rss_growth_mib"`
	ReceiverRSSMiB   float64 `json:"receiver_rss_growth_mib"`
	RawSubRSSMiB     float64 `json:"raw_subscriber_rss_growth_mib"`
	LoadBefore       string  `json:"load_before"`
	LoadAfter        string  `json:"load_after"`
	RatioOK          bool    `json:"ratio_ok"`
	RSSOK            bool    `json:"rss_ok"`
	MeasuredInChilds bool    `json:"child_processes"`
	// Rounds are the measurements the medians and maxima come from.
	Rounds []snapRound `json:"rounds"`
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rssWatch samples a process's RSS until stopped and returns the highest
// value seen, including the kernel's high-water mark at the end.
type rssWatch struct {
	pid  int
	base int64
	max  atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS(pid int) (*rssWatch, error) {
	base, _, err := procMem(pid)
	if err != nil {
		return nil, err
	}
	w := &rssWatch{pid: pid, base: base, stop: make(chan struct{}), done: make(chan struct{})}
	w.max.Store(base)
	go func() {
		defer close(w.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procMem(pid); err == nil && rss > w.max.Load() {
				w.max.Store(rss)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w, nil
}

// end stops sampling and returns the growth over the base RSS: the higher
// of the sampled maximum and VmHWM (a peak reached before sampling began
// counts too, which can only overstate the growth).
func (w *rssWatch) end() int64 {
	close(w.stop)
	<-w.done
	m := w.max.Load()
	if _, hwm, err := procMem(w.pid); err == nil && hwm > m {
		m = hwm
	}
	return m - w.base
}

// snapRound is one round of the section.
type snapRound struct {
	RawSeconds     float64 `json:"raw_seconds"`
	SnapSeconds    float64 `json:"snapshot_seconds"`
	SenderRSSMiB   float64 `json:"sender_rss_growth_mib"`
	ReceiverRSSMiB float64 `json:"receiver_rss_growth_mib"`
	RawSubRSSMiB   float64 `json:"raw_subscriber_rss_growth_mib"`
	// CPU seconds of each process during its transfer (the NATS
	// server's not included).
	RawPubCPU   float64 `json:"raw_publisher_cpu_seconds"`
	RawSubCPU   float64 `json:"raw_subscriber_cpu_seconds"`
	SenderCPU   float64 `json:"sender_cpu_seconds"`
	ReceiverCPU float64 `json:"receiver_cpu_seconds"`
	// RawLossyAttempts counts raw attempts repeated because the
	// subscriber lost messages.
	RawLossyAttempts int `json:"raw_lossy_attempts,omitempty"`
}

// runSnapshotSection runs o.rounds rounds, each raw NATS then the
// snapshot transfer with fresh child processes, against the server at
// natsURL. Throughputs are the medians over the rounds, RSS growths the
// maxima.
func runSnapshotSection(ctx context.Context, o *options, root, natsURL string, progress func(string, ...any)) (*snapResult, error) {
	res := &snapResult{Bytes: o.snapshotBytes, EnvelopeBytes: raftbridge.DefaultMaxEnvelopeBytes, Window: o.snapshotWindow, MeasuredInChilds: true, LoadBefore: loadAvg()}
	var raws, snaps []float64
	for r := 1; r <= o.rounds; r++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rd, err := runSnapRound(o, root, natsURL, res.EnvelopeBytes, r, progress)
		if err != nil {
			return nil, err
		}
		res.Rounds = append(res.Rounds, rd)
		raws = append(raws, rd.RawSeconds)
		snaps = append(snaps, rd.SnapSeconds)
		res.SenderRSSMiB = max(res.SenderRSSMiB, rd.SenderRSSMiB)
		res.ReceiverRSSMiB = max(res.ReceiverRSSMiB, rd.ReceiverRSSMiB)
		res.RawSubRSSMiB = max(res.RawSubRSSMiB, rd.RawSubRSSMiB)
	}
	res.RawSeconds, res.SnapSeconds = median(raws), median(snaps)
	mib := float64(o.snapshotBytes) / (1 << 20)
	res.RawMiBps, res.SnapMiBps = mib/res.RawSeconds, mib/res.SnapSeconds
	res.Ratio = res.SnapMiBps / res.RawMiBps
	res.RatioOK = res.Ratio >= snapGoalRatio
	res.RSSOK = res.SenderRSSMiB < snapGoalRSSGrowth>>20 && res.ReceiverRSSMiB < snapGoalRSSGrowth>>20
	res.LoadAfter = loadAvg()
	return res, nil
}

func runSnapRound(o *options, root, natsURL string, msgBytes, round int, progress func(string, ...any)) (snapRound, error) {
	var rd snapRound
	dir, err := os.MkdirTemp(root, fmt.Sprintf("snapshot-r%d-", round))
	if err != nil {
		return rd, err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	cluster, incA, incB := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	base := snapChildConfig{NATSURL: natsURL, Cluster: cluster, Sender: incA, Recv: incB, Bytes: o.snapshotBytes, Window: o.snapshotWindow}
	start := func(role string, tune func(*snapChildConfig)) (*child, error) {
		c, err := spawnChild(role, filepath.Join(dir, role+".log"), nil, modeSnap)
		if err != nil {
			return nil, err
		}
		cfg := base
		cfg.Role = role
		cfg.Dir = filepath.Join(dir, role)
		if o.profileDir != "" {
			cfg.Profile = filepath.Join(o.profileDir, fmt.Sprintf("snapshot-r%d-%s.cpu.pprof", round, role))
		}
		if tune != nil {
			tune(&cfg)
		}
		if err := c.writeLine(cfg); err != nil {
			c.stop(5 * time.Second)
			return nil, err
		}
		var l snapChildLine
		// The sender writes the whole snapshot to its store before it is
		// ready.
		if err := c.readLine(&l, 10*time.Minute); err != nil || !l.Ready {
			c.stop(5 * time.Second)
			return nil, fmt.Errorf("%s not ready: %v %s", role, err, l.Error)
		}
		return c, nil
	}
	awaitDone := func(c *child, within time.Duration) (snapChildLine, error) {
		var l snapChildLine
		err := c.readLine(&l, within)
		if err == nil && (!l.Done || l.Error != "") {
			err = fmt.Errorf("%s: %s", c.name, l.Error)
		}
		return l, err
	}
	limit := 10*time.Minute + time.Duration(o.snapshotBytes/(1<<20))*time.Second
	mib := float64(o.snapshotBytes) / (1 << 20)

	cpu0 := func(c *child) time.Duration { d, _ := procCPU(c.pid()); return d }
	cpuSince := func(c *child, d0 time.Duration) float64 { return (cpu0(c) - d0).Seconds() }

	// Raw NATS: publisher and subscriber in processes of their own. An
	// attempt in which the subscriber lost messages (slow consumer) is
	// repeated, up to three times.
	rawAttempt := func(attempt int) (lost bool, err error) {
		subject := fmt.Sprintf("bench.snapraw.%s.%d", cluster, attempt)
		rawTune := func(c *snapChildConfig) { c.Subject, c.Msg = subject, msgBytes }
		sub, err := start(snapRoleRawSub, rawTune)
		if err != nil {
			return false, err
		}
		defer sub.stop(5 * time.Second)
		pub, err := start(snapRoleRawPub, rawTune)
		if err != nil {
			return false, err
		}
		defer pub.stop(5 * time.Second)
		subW, err := watchRSS(sub.pid())
		if err != nil {
			return false, err
		}
		pubCPU, subCPU := cpu0(pub), cpu0(sub)
		began := time.Now()
		if err := pub.writeLine("go"); err != nil {
			return false, err
		}
		l, err := awaitDone(sub, limit)
		if err != nil {
			return false, fmt.Errorf("raw subscriber: %w", err)
		}
		rd.RawSeconds = time.Since(began).Seconds()
		rd.RawSubCPU = cpuSince(sub, subCPU)
		rd.RawSubRSSMiB = max(rd.RawSubRSSMiB, float64(subW.end())/(1<<20))
		if _, err := awaitDone(pub, time.Minute); err != nil {
			return false, fmt.Errorf("raw publisher: %w", err)
		}
		rd.RawPubCPU = cpuSince(pub, pubCPU)
		if l.Bytes != o.snapshotBytes {
			progress("[round %d] raw NATS: the subscriber got %d of %d bytes (slow consumer); again", round, l.Bytes, o.snapshotBytes)
			return true, nil
		}
		return false, nil
	}
	for attempt := 1; ; attempt++ {
		lost, err := rawAttempt(attempt)
		if err != nil {
			return rd, err
		}
		if !lost {
			break
		}
		rd.RawLossyAttempts++
		if attempt == 3 {
			return rd, errors.New("raw NATS lost messages in 3 attempts")
		}
	}
	progress("[round %d] raw NATS: %.0f MiB in %d-byte messages, %.0f MiB/s (%.2fs; CPU s publisher %.2f, subscriber %.2f)",
		round, mib, msgBytes, mib/rd.RawSeconds, rd.RawSeconds, rd.RawPubCPU, rd.RawSubCPU)

	// The transfer between two bridges.
	recv, err := start(snapRoleRecv, nil)
	if err != nil {
		return rd, err
	}
	defer recv.stop(30 * time.Second)
	send, err := start(snapRoleSend, nil)
	if err != nil {
		return rd, err
	}
	defer send.stop(30 * time.Second)
	sendW, err := watchRSS(send.pid())
	if err != nil {
		return rd, err
	}
	recvW, err := watchRSS(recv.pid())
	if err != nil {
		return rd, err
	}
	sendCPU, recvCPU := cpu0(send), cpu0(recv)
	began := time.Now()
	if err := send.writeLine("go"); err != nil {
		return rd, err
	}
	l, err := awaitDone(send, limit)
	if err != nil {
		return rd, fmt.Errorf("snapshot sender: %w", err)
	}
	rd.SnapSeconds = time.Since(began).Seconds()
	rd.SenderCPU, rd.ReceiverCPU = cpuSince(send, sendCPU), cpuSince(recv, recvCPU)
	rd.SenderRSSMiB = float64(sendW.end()) / (1 << 20)
	rd.ReceiverRSSMiB = float64(recvW.end()) / (1 << 20)
	if l.Status != "finish" {
		return rd, fmt.Errorf("snapshot sender: raft was told %q", l.Status)
	}
	rl, err := awaitDone(recv, time.Minute)
	if err != nil {
		return rd, fmt.Errorf("snapshot receiver: %w", err)
	}
	if rl.Bytes != o.snapshotBytes {
		return rd, fmt.Errorf("snapshot receiver: got %d bytes, want %d", rl.Bytes, o.snapshotBytes)
	}
	progress("[round %d] snapshot: %.0f MiB/s (%.2fs; CPU s sender %.2f, receiver %.2f), RSS growth sender %.1f MiB (base %.1f), receiver %.1f MiB (base %.1f)",
		round, mib/rd.SnapSeconds, rd.SnapSeconds, rd.SenderCPU, rd.ReceiverCPU, rd.SenderRSSMiB, float64(sendW.base)/(1<<20), rd.ReceiverRSSMiB, float64(recvW.base)/(1<<20))
	return rd, nil
}

// printSnapshot prints the section's table.
func printSnapshot(w io.Writer, r *snapResult, smoke bool) {
	if r == nil {
		return
	}
	okf := func(ok bool) string {
		switch {
		case smoke:
			return "(smoke)"
		case ok:
			return "ok"
		}
		return "FAIL"
	}
	fmt.Fprintf(w, "\n== 4. snapshot transfer: %d MiB, %d-byte envelopes, window %d (each side a child process), median of %d round(s) ==\n",
		r.Bytes>>20, r.EnvelopeBytes, r.Window, len(r.Rounds))
	fmt.Fprintf(w, "  raw NATS publish:        %8.1f MiB/s  (%.2fs)\n", r.RawMiBps, r.RawSeconds)
	fmt.Fprintf(w, "  raftbridge + file store: %8.1f MiB/s  (%.2fs, until SnapshotFinish: fsync included)\n", r.SnapMiBps, r.SnapSeconds)
	fmt.Fprintf(w, "  ratio %.2f (goal >= %.2f) %s\n", r.Ratio, snapGoalRatio, okf(r.RatioOK))
	fmt.Fprintf(w, "  RSS growth (max over rounds): sender %.1f MiB, receiver %.1f MiB (goal < %d MiB) %s\n",
		r.SenderRSSMiB, r.ReceiverRSSMiB, snapGoalRSSGrowth>>20, okf(r.RSSOK))
	fmt.Fprintf(w, "  raw subscriber RSS growth %.1f MiB; load average before %s, after %s\n", r.RawSubRSSMiB, r.LoadBefore, r.LoadAfter)
	lossy := 0
	for _, rd := range r.Rounds {
		lossy += rd.RawLossyAttempts
	}
	if lossy > 0 {
		fmt.Fprintf(w, "  %d raw attempt(s) lost messages (slow consumer) and were repeated\n", lossy)
	}
}

// genSnapshot streams n pseudo-random bytes.
func genSnapshot(n int64) io.Reader {
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], uint64(n))
	return io.LimitReader(rand.NewChaCha8(seed), n)
}

// snapRaft is the Raft of a snapshot child: it reports what the bridge
// tells it.
type snapRaft struct {
	status chan raft.SnapshotStatus
	snaps  chan *raftpb.Message
}

func (r *snapRaft) Process(context.Context, *raftpb.Message) error { return nil }
func (r *snapRaft) ReportUnreachable(uint64)                       {}
func (r *snapRaft) ReportSnapshot(_ uint64, st raft.SnapshotStatus) {
	select {
	case r.status <- st:
	default:
	}
}
func (r *snapRaft) ReceiveSnapshot(_ context.Context, m *raftpb.Message) error {
	select {
	case r.snaps <- m:
	default:
	}
	return nil
}

// runSnapChild is a snapshot-section child: it reads its config line,
// prints a ready line, and for "go" on stdin (publisher, sender) does its
// part; every role prints one done line.
func runSnapChild() error {
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return err
	}
	var cfg snapChildConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		return err
	}
	if cfg.Profile != "" {
		f, err := os.Create(cfg.Profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	out := func(l snapChildLine) { writeJSONLine(os.Stdout, l) }
	fail := func(err error) error {
		out(snapChildLine{Error: err.Error()})
		return err
	}
	waitGo := func() error {
		l, err := in.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(l) != `"go"` {
			return fmt.Errorf("unexpected line %q", l)
		}
		return nil
	}
	nc, err := nats.Connect(cfg.NATSURL, nats.MaxReconnects(-1))
	if err != nil {
		return fail(err)
	}
	defer nc.Close()

	switch cfg.Role {
	case snapRoleRawSub:
		// Raw NATS has no flow control: a subscriber that falls behind
		// loses messages (slow consumer). The publisher ends with an empty
		// message; the subscriber also gives up after a silence.
		var got, last atomic.Int64
		done := make(chan struct{})
		s, err := nc.Subscribe(cfg.Subject, func(m *nats.Msg) {
			last.Store(time.Now().UnixNano())
			if len(m.Data) == 0 {
				close(done)
				return
			}
			got.Add(int64(len(m.Data)))
		})
		if err != nil {
			return fail(err)
		}
		if err := s.SetPendingLimits(-1, -1); err != nil {
			return fail(err)
		}
		if err := nc.Flush(); err != nil {
			return fail(err)
		}
		out(snapChildLine{PID: os.Getpid(), Ready: true})
		tick := time.NewTicker(100 * time.Millisecond)
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-tick.C:
				if l := last.Load(); l != 0 && time.Since(time.Unix(0, l)) > 10*time.Second {
					break wait // the end marker was lost too
				}
			}
		}
		tick.Stop()
		out(snapChildLine{Done: true, Bytes: got.Load()})
	case snapRoleRawPub:
		msg := make([]byte, cfg.Msg)
		if _, err := io.ReadFull(genSnapshot(int64(cfg.Msg)), msg); err != nil {
			return fail(err)
		}
		out(snapChildLine{PID: os.Getpid(), Ready: true})
		if err := waitGo(); err != nil {
			return fail(err)
		}
		for sent := int64(0); sent < cfg.Bytes; sent += int64(len(msg)) {
			// The same bytes as the snapshot: the last message is short.
			if err := nc.Publish(cfg.Subject, msg[:min(int64(len(msg)), cfg.Bytes-sent)]); err != nil {
				return fail(err)
			}
		}
		if err := nc.Publish(cfg.Subject, nil); err != nil { // the end
			return fail(err)
		}
		if err := nc.Flush(); err != nil {
			return fail(err)
		}
		out(snapChildLine{Done: true})
	case snapRoleSend, snapRoleRecv:
		return runSnapBridge(cfg, nc, in, out, fail, waitGo)
	default:
		return fail(fmt.Errorf("unknown role %q", cfg.Role))
	}
	// Wait for stop.
	_, _ = in.ReadString('\n')
	return nil
}

func runSnapBridge(cfg snapChildConfig, nc *nats.Conn, in *bufio.Reader, out func(snapChildLine), fail func(error) error, waitGo func() error) error {
	store, err := raftbridge.NewFileSnapshotStore(raftbridge.FileSnapshotStoreConfig{Dir: cfg.Dir})
	if err != nil {
		return fail(err)
	}
	defer store.Close()
	self, id := cfg.Recv, uint64(2)
	if cfg.Role == snapRoleSend {
		self, id = cfg.Sender, 1
	}
	var ref []byte
	if cfg.Role == snapRoleSend {
		if ref, err = store.Save(4, 1000, genSnapshot(cfg.Bytes)); err != nil {
			return fail(err)
		}
	}
	b, err := natsbus.New(natsbus.Config{Conn: nc, Cluster: cfg.Cluster, Self: self, Logger: childLogger(false)})
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	dir := raftbridge.NewMemDirectory()
	dir.Set(1, cfg.Sender)
	dir.Set(2, cfg.Recv)
	r := &snapRaft{status: make(chan raft.SnapshotStatus, 1), snaps: make(chan *raftpb.Message, 1)}
	br, err := raftbridge.New(raftbridge.Config{
		Cluster: cfg.Cluster, ID: id, Incarnation: self, Bus: b, Directory: dir, Raft: r,
		Logger: childLogger(false), SnapshotStore: store, SnapshotWindow: cfg.Window,
		MaxSnapshotBytes: max(cfg.Bytes, raftbridge.DefaultMaxSnapshotBytes),
	})
	if err != nil {
		return fail(err)
	}
	defer br.Close()
	if err := br.Start(); err != nil {
		return fail(err)
	}
	if err := nc.Flush(); err != nil {
		return fail(err)
	}
	out(snapChildLine{PID: os.Getpid(), Ready: true})
	if cfg.Role == snapRoleSend {
		if err := waitGo(); err != nil {
			return fail(err)
		}
		br.Send([]*raftpb.Message{{
			Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(5),
			Snapshot: &raftpb.Snapshot{Data: ref, Metadata: &raftpb.SnapshotMetadata{
				Index: proto.Uint64(1000), Term: proto.Uint64(4), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}},
			}},
		}})
		st := <-r.status
		status := "failure"
		if st == raft.SnapshotFinish {
			status = "finish"
		}
		out(snapChildLine{Done: true, Status: status})
	} else {
		m := <-r.snaps
		src, err := store.Open(m.GetSnapshot().GetData())
		if err != nil {
			return fail(err)
		}
		size := src.Size()
		src.Close()
		out(snapChildLine{Done: true, Bytes: size})
	}
	// The bridge's and the bus's counters, for the kept log.
	st, _ := json.Marshal(map[string]any{"bridge": br.Stats(), "bus": b.Stats()})
	fmt.Fprintf(os.Stderr, "stats %s\n", st)
	_, _ = in.ReadString('\n')
	return nil
}

// runSnapshot starts a NATS server in a child process of its own and runs
// the section against it.
func runSnapshot(ctx context.Context, o *options, root string, progress func(string, ...any)) (*snapResult, error) {
	ns, err := spawnChild("nats-snapshot", filepath.Join(root, "nats-snapshot.log"), nil, modeNATS, "--servers", "1")
	if err != nil {
		return nil, err
	}
	defer ns.stop(10 * time.Second)
	var hello natsHello
	if err := ns.readLine(&hello, 30*time.Second); err != nil {
		return nil, err
	}
	if len(hello.URLs) != 1 {
		return nil, fmt.Errorf("NATS child reported %d URLs", len(hello.URLs))
	}
	return runSnapshotSection(ctx, o, root, hello.URLs[0], progress)
}

// snapshotGoals are section 4's targets as goals of the run.
func snapshotGoals(r *snapResult) []goal {
	if r == nil {
		return nil
	}
	limit := float64(snapGoalRSSGrowth >> 20)
	worst := max(r.SenderRSSMiB, r.ReceiverRSSMiB)
	return []goal{
		{Name: fmt.Sprintf("snapshot of %d MiB: streamed / raw NATS bytes/s", r.Bytes>>20), Value: r.Ratio,
			Target: fmt.Sprintf(">= %.2f", snapGoalRatio), Pass: r.RatioOK},
		{Name: "snapshot: RSS growth of sender and receiver, the larger (MiB)", Value: worst,
			Target: fmt.Sprintf("< %.0f", limit), Pass: r.RSSOK},
	}
}
