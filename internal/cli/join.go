package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/membership"
)

// awaitAdmission announces a joining incarnation on the membership stream
// and waits until a committed change makes it a member; it then records
// the Raft ID it was given in the data directory. An incarnation that was
// tombstoned meanwhile can never join.
func awaitAdmission(ctx context.Context, g *globals, f *nodeFlags, nc *nats.Conn, id *datadir.Identity) (*datadir.Identity, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, withCode(ExitUnreachable, err)
	}
	// The announcement is signed with the incarnation's key; `member add`
	// takes the key from it into the replicated member record.
	if id.PublicKey == "" {
		if id, err = datadir.EnsureKey(f.data); err != nil {
			return nil, err
		}
	}
	kp, err := datadir.LoadKey(f.data)
	if err != nil {
		return nil, err
	}
	cfg := membership.StreamConfig{JS: js, Prefix: f.prefix, Cluster: id.ClusterID, Incarnation: id.Incarnation, Signer: kp}
	s, err := openStreamWaiting(ctx, g, f, cfg)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a := membership.Announce{Incarnation: id.Incarnation, Name: id.Name, Protocol: membership.FormatVersion,
		Software: "raftbus", ClientURL: "http://" + f.listen, DataDir: f.data, Host: host}
	actx, cancel := context.WithTimeout(ctx, f.nats.timeout)
	err = s.Announce(actx, a)
	cancel()
	if err != nil {
		return nil, withCode(ExitUnreachable, fmt.Errorf("announce to %s: %w", s.Name(), err))
	}
	fmt.Fprintf(g.stdout, "incarnation %s of %s announced to cluster %s; waiting to be added:\n  raftbus member add %s --cluster %s -s %s\n",
		id.Incarnation, id.Name, id.ClusterID, id.Name, id.ClusterID, f.nats.server)
	var admitted membership.HexID
	var refused error
	for admitted == 0 && refused == nil {
		// Only verified committed changes count: a forged "add" must not
		// hand this node a Raft ID, nor a forged "remove" refuse it.
		d := membership.NewDirectory()
		err := s.Watch(ctx, 1, func(r membership.Record) bool {
			for _, c := range d.Add(r) {
				if c.Member.Incarnation != id.Incarnation && c.Op != membership.OpBaseline {
					continue
				}
				switch c.Op {
				case membership.OpAdd, membership.OpAddLearner:
					admitted = c.Member.ID
				case membership.OpBaseline:
					// A repaired stream starts with the whole membership.
					for _, m := range c.Members {
						if m.Incarnation == id.Incarnation {
							admitted = m.ID
						}
					}
				case membership.OpRemove:
					refused = fmt.Errorf("incarnation %s was removed from cluster %s; wipe %s to join again as a new incarnation", id.Incarnation, id.ClusterID, f.data)
				}
			}
			return admitted == 0 && refused == nil
		}, membership.KindCommitted)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && admitted == 0 && refused == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	if refused != nil {
		return nil, withCode(ExitRemoved, refused)
	}
	id, err = datadir.SetRaftID(f.data, uint64(admitted))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(g.stdout, "added to cluster %s as member %s; starting\n", id.ClusterID, admitted)
	return id, nil
}

// openStreamWaiting opens the cluster's membership stream. Nodes of a new
// cluster are often started together (systemd, a script): a joiner that
// comes up before the bootstrap node created the stream waits for it,
// saying so once, instead of exiting.
func openStreamWaiting(ctx context.Context, g *globals, f *nodeFlags, cfg membership.StreamConfig) (*membership.Stream, error) {
	for said := false; ; {
		octx, cancel := context.WithTimeout(ctx, f.nats.timeout)
		s, err := membership.OpenStream(octx, cfg)
		cancel()
		switch {
		case err == nil:
			return s, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !errors.Is(err, membership.ErrStreamMissing):
			return nil, withCode(ExitUnreachable, err)
		case !said:
			fmt.Fprintf(g.stdout, "membership stream of cluster %s not found yet: waiting for the cluster's bootstrap node to create it (is --cluster right?)\n", cfg.Cluster)
			said = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
