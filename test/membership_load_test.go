package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/server"
)

// Membership requests through the stream, by racing operators, while the
// linearizability workload runs (issue 10): a real joiner is added as a
// learner with --promote-when-caught-up while a second operator asks to
// promote a learner that never runs (rejected as not ready) and a third
// removes another; healing removes the rest. The history must stay
// linearizable and every request must be decided. Long mode only (the CI
// budget): go test -race -run TestLinearizabilityMembershipRequests ./test/ -long
func TestLinearizabilityMembershipRequests(t *testing.T) {
	if !longMode() {
		t.Skip("long mode only (-long or RAFTBUS_LONG=1)")
	}
	c := newLinClusterProxied(t, churnTune)
	c.leader()
	runFault(t, c, membershipRequests)
}

var membershipRequests = fault{"membership-requests", 50, func(t *testing.T, c *linCluster, r *rand.Rand) func() {
	k := r.IntN(1 << 20)
	url := c.natsURL(0)
	member := func(args ...string) (string, string, int) {
		return runCLI(t, append(append([]string{"member"}, args...), "-s", url, "--cluster", c.cluster.String(), "--timeout", "30s")...)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var s *membership.Stream
	testnats.Eventually(t, 20*time.Second, func() error {
		var err error
		if s, err = membership.OpenStream(context.Background(), membership.StreamConfig{JS: js, Cluster: c.cluster}); err != nil {
			return err
		}
		recs, err := s.ReadAll(context.Background(), membership.KindCommitted)
		if err != nil {
			return err
		}
		if n := len(membership.Rebuild(recs).Members); n < 3 {
			return fmt.Errorf("the stream shows %d members", n)
		}
		return nil
	})
	ghost, other := fmt.Sprintf("ghost-%d", k), fmt.Sprintf("other-%d", k)
	announceFake(t, s, ghost)
	announceFake(t, s, other)
	for _, n := range []string{ghost, other} {
		if out, errOut, code := member("add", n, "--learner"); code != 0 {
			t.Fatalf("add %s: exit %d\n%s%s", n, code, out, errOut)
		}
	}

	// A real joiner, with the Raft ID the leader will give it next.
	name := fmt.Sprintf("m-%d", k)
	dir := filepath.Join(c.root.TempDir(), name)
	if _, err := datadir.Create(dir, datadir.Identity{ClusterID: c.cluster, Name: name}); err != nil {
		t.Fatal(err)
	}
	lead := c.server(c.leader())
	if _, err := datadir.SetRaftID(dir, uint64(lead.Node().Membership().NextID)); err != nil {
		t.Fatal(err)
	}
	jc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	tune := c.tune
	tune.JoinMembers = lead.Node().Members()
	joiner, err := server.Start(server.Config{DataDir: dir, Conn: jc, Joining: true, Node: tune, Logger: testLogger(t).With("node", name)})
	if err != nil {
		jc.Close()
		t.Fatal(err)
	}
	testnats.Eventually(t, 15*time.Second, func() error {
		recs, err := s.ReadAll(context.Background(), membership.KindAnnounce)
		if err != nil {
			return err
		}
		if _, ok := membership.Rebuild(recs).Candidate(name); !ok {
			return fmt.Errorf("%s has not announced itself", name)
		}
		return nil
	})

	// Three operators at once. Each may lose a race (exit 7) and retries.
	retry := func(args ...string) (string, string, int) {
		for {
			out, errOut, code := member(args...)
			if code != 7 {
				return out, errOut, code
			}
		}
	}
	var wg sync.WaitGroup
	var addOut, addErr, promoteErr, otherErr string
	var addCode, promoteCode, otherCode int
	wg.Add(3)
	go func() {
		defer wg.Done()
		addOut, addErr, addCode = retry("add", name, "--learner", "--promote-when-caught-up")
	}()
	go func() { defer wg.Done(); _, promoteErr, promoteCode = retry("promote", ghost) }()
	go func() { defer wg.Done(); _, otherErr, otherCode = retry("remove", other) }()
	wg.Wait()
	if addCode != 0 || !strings.Contains(addOut, "promoted to voter") {
		t.Errorf("add %s --promote-when-caught-up: exit %d\n%s%s", name, addCode, addOut, addErr)
	}
	if promoteCode != 4 || !strings.Contains(promoteErr, "not in sync") {
		t.Errorf("promote %s: exit %d, %s", ghost, promoteCode, promoteErr)
	}
	if otherCode != 0 {
		t.Errorf("remove %s: exit %d, %s", other, otherCode, otherErr)
	}
	return func() {
		for _, n := range []string{name, ghost} {
			if out, errOut, code := retry("remove", n); code != 0 {
				t.Errorf("remove %s: exit %d\n%s%s", n, code, out, errOut)
			}
		}
		select {
		case <-joiner.Done():
		case <-time.After(20 * time.Second):
			t.Errorf("removed %s did not stop itself", name)
		}
		joiner.Halt()
		jc.Close()
	}
}}
