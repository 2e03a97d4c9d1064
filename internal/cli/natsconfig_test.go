package cli

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
)

// nats-config --cluster drops a host that group 0 removed only when it is
// no member of another Raft group: tombstones are per group, and a host
// removed from group 0 that still serves group 1 needs its user.
func TestNATSConfigKeepsHostsOfOtherGroups(t *testing.T) {
	isolateEnv(t)
	ns := testnats.Run(t, nil)
	js, err := jetstream.New(testnats.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cluster := uuid.New()
	alpha, beta, gamma := newHostKey(t), newHostKey(t), newHostKey(t)
	names := map[uuid.UUID]string{alpha.inc: "alpha", beta.inc: "beta", gamma.inc: "gamma"}
	view := func(g uint64, h hostKey) *membership.Stream {
		s, err := membership.CreateStream(ctx, membership.StreamConfig{JS: js, Cluster: cluster, Group: g, Incarnation: h.inc, Signer: h.kp})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	member := func(id int, h hostKey) membership.Member {
		return membership.Member{ID: membership.HexID(id), Name: names[h.inc], Incarnation: h.inc, PublicKey: h.pub}
	}
	changes := []struct {
		g  uint64
		by hostKey
		c  membership.Committed
	}{
		{0, alpha, membership.Committed{Index: 1, Op: membership.OpAdd, Member: member(1, alpha)}},
		{0, alpha, membership.Committed{Index: 2, Op: membership.OpAdd, Member: member(2, beta)}},
		{0, alpha, membership.Committed{Index: 3, Op: membership.OpAdd, Member: member(3, gamma)}},
		{1, beta, membership.Committed{Index: 1, Op: membership.OpAdd, Member: member(1, beta)}},
		{0, alpha, membership.Committed{Index: 4, Op: membership.OpRemove, Member: member(2, beta)}},
		{0, alpha, membership.Committed{Index: 5, Op: membership.OpRemove, Member: member(3, gamma)}},
	}
	for _, c := range changes {
		c.c.Version = c.c.Index
		if err := view(c.g, c.by).PublishCommitted(ctx, c.c); err != nil {
			t.Fatal(err)
		}
	}
	for inc, name := range names {
		h := map[uuid.UUID]hostKey{alpha.inc: alpha, beta.inc: beta, gamma.inc: gamma}[inc]
		if err := view(0, h).Announce(ctx, membership.Announce{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runCLI(t, "nats-config", "--cluster", cluster.String(), "-s", ns.ClientURL(), "--admin-nkey", alpha.pub, "-w", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var c authConfig
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var keys []string
	for _, u := range c.Users {
		if u.Name != "admin" {
			keys = append(keys, u.Nkey)
		}
	}
	slices.Sort(keys)
	want := []string{alpha.pub, beta.pub}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("node users %v, want alpha's and beta's %v (gamma %s)", keys, want, gamma.pub)
	}
}
