// Command ownraft runs a cluster of etcd raft nodes with their own Ready
// loop over raftbus: raftbridge for the Raft side, a bus for the network
// (natsbus on an embedded, per-node authenticated NATS server, or membus in
// memory), datadir for each node's identity (incarnation and nkey),
// raftstore for durable Raft storage, and raftbridge's membership kit
// (ConfChange context, ApplyConfChange, directory image in snapshots).
//
// It bootstraps three nodes, proposes on a follower, adds a fourth node
// (which catches up from a snapshot), removes a follower (its Raft ID and
// incarnation are tombstoned), restarts every node from its data directory
// and checks that the tombstones survived, then proposes again.
//
//	go run ./examples/ownraft            # over NATS
//	go run ./examples/ownraft -bus mem   # over membus
//	go run ./examples/ownraft -bus lossy # over membus with faults
//
// Its test runs both in CI. docs/own-raft-loop.md explains every step.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus/membus"
	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/raftbridge"
)

func main() { os.Exit(realMain()) }

func realMain() int {
	busKind := flag.String("bus", "nats", "nats (an embedded NATS server), mem (membus) or lossy (membus dropping, duplicating, reordering and delaying)")
	data := flag.String("data", "", "where the data directories go (default: a new temporary directory, removed at the end)")
	verbose := flag.Bool("v", false, "log the nodes' warnings to stderr")
	flag.Parse()
	root := *data
	if root == "" {
		tmp, err := os.MkdirTemp("", "ownraft")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		root = tmp
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *busKind, root, logger); err != nil {
		fmt.Fprintln(os.Stderr, "ownraft:", err)
		return 1
	}
	return 0
}

// cluster is the running nodes by Raft ID.
type cluster map[uint64]*node

// run is the whole scenario; it prints one line per step.
func run(ctx context.Context, w io.Writer, busKind, root string, logger *slog.Logger) (err error) {
	clusterID := uuid.Must(uuid.NewV7())
	dirOf := func(id uint64) string { return filepath.Join(root, fmt.Sprintf("n%d", id)) }

	// 1. Three data directories, each a new incarnation with its own nkey.
	type opened struct {
		id     *datadir.Identity
		unlock func() error
	}
	var founders []opened
	defer func() {
		for _, o := range founders {
			if o.unlock != nil {
				_ = o.unlock()
			}
		}
	}()
	var ids []*datadir.Identity
	var peers []raftbridge.Member
	for i := uint64(1); i <= 3; i++ {
		id, unlock, err := openIdentity(dirOf(i), clusterID, i, fmt.Sprintf("n%d", i))
		if err != nil {
			return err
		}
		founders = append(founders, opened{id, unlock})
		ids = append(ids, id)
		peers = append(peers, raftbridge.Member{ID: raftbridge.ID(id.RaftID), Incarnation: id.Incarnation, PublicKey: id.PublicKey, Name: id.Name})
	}

	var tr transport
	switch busKind {
	case "nats":
		if tr, err = startNATS(clusterID, ids, logger); err != nil {
			return err
		}
	case "mem":
		tr = memTransport{membus.NewNetwork(1)}
	case "lossy":
		// membus with faults: raft and the bridge ride them out (raft
		// retransmits, snapshots resend chunks), with the same outcome.
		net := membus.NewNetwork(1)
		net.SetDropRate(0.05)
		net.SetDuplicateRate(0.02)
		net.SetReorderRate(0.05)
		net.SetDelay(0, 2*time.Millisecond)
		tr = memTransport{net}
	default:
		return fmt.Errorf("unknown bus %q (nats, mem or lossy)", busKind)
	}
	defer tr.close()

	c := cluster{}
	defer func() {
		for _, n := range c {
			n.stop()
		}
	}()
	for i, o := range founders {
		b, err := tr.newBus(o.id, dirOf(o.id.RaftID))
		if err != nil {
			return err
		}
		n, err := startNode(o.id, o.unlock, nodeConfig{Dir: dirOf(o.id.RaftID), Bus: b, Peers: peers, Logger: logger})
		if err != nil {
			_ = b.Close()
			return err
		}
		founders[i].unlock = nil // the node owns the lock now
		c[o.id.RaftID] = n
	}
	leader, err := c.waitLeader(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "bootstrapped 3 nodes; a leader is elected")

	// 2. A follower proposes; raft forwards the proposal to the leader.
	if err := c.write(ctx, c.follower(leader), "greeting", "hello"); err != nil {
		return err
	}
	fmt.Fprintln(w, "a follower proposed greeting=hello; applied on 3 nodes")
	// Enough entries for every node to snapshot and compact its log.
	for i := range snapshotEvery {
		if err := c.write(ctx, leader, fmt.Sprintf("k%d", i), "v"); err != nil {
			return err
		}
	}

	// 3. Add a fourth node. It is admitted to the network, primed with the
	// members (a directory image) so that it accepts its leader, and
	// started with no peers: the leader sends it a snapshot, as the log is
	// compacted.
	id4, unlock4, err := openIdentity(dirOf(4), clusterID, 4, "n4")
	if err != nil {
		return err
	}
	if err := tr.admit(id4); err != nil {
		_ = unlock4()
		return err
	}
	b4, err := tr.newBus(id4, dirOf(4))
	if err != nil {
		_ = unlock4()
		return err
	}
	n4, err := startNode(id4, unlock4, nodeConfig{Dir: dirOf(4), Bus: b4, Members: leader.dir.Save(), Logger: logger})
	if err != nil {
		_ = b4.Close()
		_ = unlock4()
		return err
	}
	c[4] = n4
	if err := c.changeMembers(ctx, func() error { return leader.addMember(ctx, n4.member()) },
		func(n *node) bool { _, ok := n.dir.Incarnation(4); return ok && n.get("greeting") == "hello" }); err != nil {
		return err
	}
	fmt.Fprintf(w, "added n4; it caught up from a snapshot: %v, greeting=%s\n", n4.store.SnapshotIndex() > 0, n4.get("greeting"))

	// 4. Remove a follower: its Raft ID and incarnation are tombstoned in
	// every directory, forever.
	victim := c.follower(leader)
	if victim == n4 {
		victim = c.followerExcept(leader, n4)
	}
	gone := victim.member()
	delete(c, uint64(gone.ID))
	if err := c.changeMembers(ctx, func() error { return leader.removeMember(ctx, uint64(gone.ID)) },
		func(n *node) bool {
			return n.dir.RemovedID(uint64(gone.ID)) && n.dir.RemovedIncarnation(gone.Incarnation)
		}); err != nil {
		victim.stop()
		return err
	}
	victim.stop()
	if err := tr.expel(gone.Incarnation); err != nil {
		return err
	}
	fmt.Fprintf(w, "removed a follower; its Raft ID and incarnation are tombstoned on %d nodes\n", len(c))
	for i := range snapshotEvery { // so that every snapshot covers the removal
		if err := c.write(ctx, leader, fmt.Sprintf("k%d", i), "w"); err != nil {
			return err
		}
	}

	// 5. Restart every node from its data directory: state and directory
	// come back from the last snapshot (which holds the directory image)
	// and the log after it.
	ids = ids[:0]
	for id, n := range c {
		n.stop() // the whole cluster is down: what comes back is on disk
		delete(c, id)
		ids = append(ids, n.id)
	}
	for _, old := range ids {
		dir := dirOf(old.RaftID)
		ident, unlock, err := openIdentity(dir, clusterID, old.RaftID, "")
		if err != nil {
			return err
		}
		b, err := tr.newBus(ident, dir)
		if err != nil {
			_ = unlock()
			return err
		}
		n, err := startNode(ident, unlock, nodeConfig{Dir: dir, Bus: b, Logger: logger})
		if err != nil {
			_ = b.Close()
			_ = unlock()
			return err
		}
		c[ident.RaftID] = n
	}
	if leader, err = c.waitLeader(ctx); err != nil {
		return err
	}
	kept := true
	for _, n := range c {
		kept = kept && n.dir.RemovedID(uint64(gone.ID)) && n.dir.RemovedIncarnation(gone.Incarnation) && n.get("greeting") == "hello"
	}
	fmt.Fprintf(w, "restarted %d nodes from their data directories; state and tombstones kept: %v\n", len(c), kept)

	if err := c.write(ctx, c.follower(leader), "greeting", "again"); err != nil {
		return err
	}
	fmt.Fprintf(w, "a follower proposed greeting=again; applied on %d nodes\n", len(c))
	return nil
}

// waitLeader waits until every node follows the same leader.
func (c cluster) waitLeader(ctx context.Context) (*node, error) {
	var leader *node
	err := c.poll(ctx, func() bool {
		var lead uint64
		for _, n := range c {
			st := n.raft.Status()
			if st.Lead == 0 || (lead != 0 && st.Lead != lead) {
				return false
			}
			lead = st.Lead
		}
		leader = c[lead]
		return leader != nil
	})
	return leader, err
}

// follower returns a node that is not leader.
func (c cluster) follower(leader *node) *node { return c.followerExcept(leader, nil) }

func (c cluster) followerExcept(leader, not *node) *node {
	var best *node
	for _, n := range c {
		if n != leader && n != not && (best == nil || n.id.RaftID < best.id.RaftID) {
			best = n
		}
	}
	return best
}

// write proposes k=v on n and waits until every node applied it,
// proposing again while it is not (a proposal may be dropped, as raft
// drops them while there is no leader).
func (c cluster) write(ctx context.Context, n *node, k, v string) error {
	return c.retry(ctx, func() error { return n.raft.Propose(ctx, []byte(k+"="+v)) },
		func(n *node) bool { return n.get(k) == v })
}

// changeMembers proposes a membership change until every node applied it.
// Proposing it again is safe: ApplyConfChange and raft ignore a change
// already applied.
func (c cluster) changeMembers(ctx context.Context, propose func() error, done func(*node) bool) error {
	return c.retry(ctx, propose, done)
}

func (c cluster) retry(ctx context.Context, propose func() error, done func(*node) bool) error {
	all := func() bool {
		for _, n := range c {
			if !done(n) {
				return false
			}
		}
		return true
	}
	for {
		if err := propose(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		wait, cancel := context.WithTimeout(ctx, time.Second)
		err := c.poll(wait, all)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not applied everywhere: %w", ctx.Err())
		}
	}
}

// poll checks cond every 5ms until it holds or ctx ends.
func (c cluster) poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
