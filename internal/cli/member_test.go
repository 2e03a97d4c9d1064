package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
)

// --group takes a Raft group, a non-negative decimal number, on every
// member subcommand; anything else is a usage error that names the flag,
// before anything connects.
func TestMemberGroupFlag(t *testing.T) {
	isolateEnv(t)
	for _, bad := range []string{"-1", "x", "1.5", "", "0x1", "18446744073709551616"} {
		for _, sub := range [][]string{{"list"}, {"history"}, {"add", "n2"}, {"remove", "2"}, {"promote", "2"}, {"stream", "repair"}} {
			args := append(append([]string{"member"}, sub...), "--group="+bad, "--cluster", uuid.NewString(), "-s", "nats://127.0.0.1:1")
			_, errOut, code := runCLI(t, args...)
			if code != ExitUsage || !strings.Contains(errOut, `--group "`+bad+`"`) {
				t.Errorf("raftbus %s: exit %d, stderr %q; want a usage error about --group", strings.Join(args, " "), code, errOut)
			}
		}
	}
	for arg, want := range map[string]uint64{"0": 0, "1": 1, "007": 7, "18446744073709551615": 1<<64 - 1} {
		if g, err := parseGroup(arg); err != nil || g != want {
			t.Errorf("parseGroup(%q) = %d, %v; want %d", arg, g, err, want)
		}
	}
}

// hostKey is one host's incarnation and key.
type hostKey struct {
	inc uuid.UUID
	kp  nkeys.KeyPair
	pub string
}

func newHostKey(t *testing.T) hostKey {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return hostKey{inc: uuid.New(), kp: kp, pub: pub}
}

// `member list --group 1` and `member history --group 1` read group 1 of
// a stream that holds groups 0 and 1; without --group they read group 0.
func TestMemberListReadsItsGroup(t *testing.T) {
	isolateEnv(t)
	ns := testnats.Run(t, nil)
	js, err := jetstream.New(testnats.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cluster := uuid.New()
	alpha, beta, gamma := newHostKey(t), newHostKey(t), newHostKey(t)
	open := func(g uint64, h hostKey) *membership.Stream {
		s, err := membership.CreateStream(ctx, membership.StreamConfig{JS: js, Cluster: cluster, Group: g, Incarnation: h.inc, Signer: h.kp})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	boot := func(g uint64, by hostKey, members ...hostKey) {
		s := open(g, by)
		for i, h := range members {
			m := membership.Member{ID: membership.HexID(i + 1), Name: map[uuid.UUID]string{alpha.inc: "alpha", beta.inc: "beta", gamma.inc: "gamma"}[h.inc],
				Incarnation: h.inc, PublicKey: h.pub}
			if err := s.PublishCommitted(ctx, membership.Committed{Index: uint64(i + 1), Op: membership.OpAdd, Member: m, Version: uint64(i + 1)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	boot(0, alpha, alpha)
	boot(1, beta, beta, gamma)
	for name, h := range map[string]hostKey{"alpha": alpha, "beta": beta, "gamma": gamma} {
		if err := open(1, h).Announce(ctx, membership.Announce{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"--cluster", cluster.String(), "-s", ns.ClientURL(), "--timeout", "5s"}
	member := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(t, append(append([]string{"member"}, args...), base...)...)
		if code != 0 {
			t.Fatalf("raftbus member %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	type listed struct {
		Group   *uint64 `json:"group"`
		Version uint64  `json:"version"`
		Members []struct {
			ID   membership.HexID `json:"id"`
			Name string           `json:"name"`
		} `json:"members"`
	}
	for _, c := range []struct {
		args  []string
		group uint64
		names []string
	}{{nil, 0, []string{"alpha"}}, {[]string{"--group", "1"}, 1, []string{"beta", "gamma"}}, {[]string{"--group", "0"}, 0, []string{"alpha"}}} {
		var l listed
		out := member(append([]string{"list", "-w", "json"}, c.args...)...)
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var names []string
		for _, m := range l.Members {
			names = append(names, m.Name)
		}
		if strings.Join(names, ",") != strings.Join(c.names, ",") || l.Version != uint64(len(c.names)) {
			t.Fatalf("member list %v: members %v version %d, want %v", c.args, names, l.Version, c.names)
		}
		if (c.group == 0) != (l.Group == nil) || (l.Group != nil && *l.Group != c.group) {
			t.Fatalf("member list %v: group %v, want %d", c.args, l.Group, c.group)
		}
	}
	if out := member("list", "--group", "1"); !strings.Contains(out, "Group 1 of cluster "+cluster.String()) || !strings.Contains(out, "gamma") {
		t.Fatalf("member list --group 1:\n%s", out)
	}
	if out := member("list"); strings.Contains(out, "Group") || strings.Contains(out, "beta") {
		t.Fatalf("member list:\n%s", out)
	}
	for g, args := range map[uint64][]string{0: {"history", "-w", "json"}, 1: {"history", "-w", "json", "--group", "1"}} {
		var h struct {
			Records []struct {
				membership.Record
				Rejected any `json:"rejected"`
			} `json:"records"`
			Rejected map[string]int `json:"rejected"`
		}
		out := member(args...)
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		// Group 0: its bootstrap and the 3 announcements; group 1: its 2
		// changes and the same announcements. Nothing of the other group,
		// and nothing rejected.
		want := map[uint64]int{0: 4, 1: 5}[g]
		if len(h.Records) != want || len(h.Rejected) != 0 {
			t.Fatalf("history of group %d: %d records (want %d), rejected %v\n%s", g, len(h.Records), want, h.Rejected, out)
		}
		for _, r := range h.Records {
			if r.Rejected != nil || (r.Kind != membership.KindAnnounce && r.Group != g) {
				t.Fatalf("history of group %d shows %+v", g, r)
			}
		}
	}
	if out := member("history", "--group", "1"); !strings.Contains(out, "Group 1 of cluster") || !strings.Contains(out, "member 0000000000000002 of this group") {
		t.Fatalf("member history --group 1:\n%s", out)
	}
}
