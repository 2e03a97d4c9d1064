package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/kv"
	"github.com/raftbus/raftbus/node"
)

// A sharded server: every key lands in its group on every node, /status
// counts the groups, metrics carry the group and pass promlint, idle groups
// quiesce, and a restart with another group count is refused.
func TestShardedServers(t *testing.T) {
	const groups = 4
	c := newTestCluster(t, 3, 3, func(cfg *Config) { cfg.Groups = groups })
	for _, s := range c.servers {
		if s.Groups() != groups {
			t.Fatalf("%s runs %d groups, want %d", s.Identity().Name, s.Groups(), groups)
		}
	}
	// Ready: every group has a leader and passes a read barrier.
	testnats.Eventually(t, 20*time.Second, func() error {
		for _, s := range c.servers {
			if err := s.readyz(context.Background()); err != nil {
				return fmt.Errorf("%s: %w", s.Identity().Name, err)
			}
		}
		return nil
	})
	for i := range 40 {
		key := fmt.Sprintf("key-%d", i)
		if code, body := do(t, nil, http.MethodPut, c.servers[i%3].URL()+"/kv/"+key, "v"); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", key, code, body)
		}
	}
	testnats.Eventually(t, 10*time.Second, func() error {
		for _, s := range c.servers {
			for i := range 40 {
				key := fmt.Sprintf("key-%d", i)
				g := kv.ShardOf(key, groups)
				for other := range groups {
					_, ok := s.GroupKV(other).Get(key)
					if ok != (other == g) {
						return fmt.Errorf("%s: %s in group %d: %v (its group is %d)", s.Identity().Name, key, other, ok, g)
					}
				}
			}
		}
		return nil
	})

	// Idle, every group quiesces, and /status says so.
	testnats.Eventually(t, 10*time.Second, func() error {
		for _, s := range c.servers {
			if st := s.Status(); st.Groups != groups || st.Quiescent != groups {
				return fmt.Errorf("%s: %d of %d groups quiescent", s.Identity().Name, st.Quiescent, st.Groups)
			}
		}
		return nil
	})
	code, body := get(t, nil, c.servers[0].URL()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	// A group's drop series appear with the first drop (sparse): a
	// thousand groups would otherwise hold dozens of zero series each.
	if strings.Contains(body, `raftbus_transport_dropped_messages_total{group=`) {
		t.Error("/metrics holds per-group drop series before any drop")
	}
	for _, want := range []string{`raftbus_server_applied_index{group="3"}`, `raftbus_transport_sent_messages_total{group="2",peer="`,
		`raftbus_host_dropped_payloads_total{reason="unknown_group"}`, `raftbus_raftstore_wal_fsyncs_total`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	problems, err := promlint.New(bytes.NewReader([]byte(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// The group count is the cluster's: another one is refused, naming it.
	s := c.servers[2]
	s.Stop()
	for _, n := range []int{1, groups - 1} {
		cfg := Config{DataDir: c.dirs[2], Conn: testnats.Connect(t, c.ns), Groups: n, Node: node.Config{TickInterval: 10 * time.Millisecond}, Logger: testLogger()}
		if s, err := Start(cfg); err == nil {
			s.Stop()
			t.Fatalf("a node of %d groups started with %d", groups, n)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("--groups %d", groups)) {
			t.Fatalf("start with %d groups: %v, want an error naming --groups %d", n, err, groups)
		}
	}
	cfg := Config{DataDir: c.dirs[2], Conn: testnats.Connect(t, c.ns), Groups: groups, Node: node.Config{TickInterval: 10 * time.Millisecond}, Logger: testLogger()}
	s, err = Start(cfg)
	if err != nil {
		t.Fatalf("restart with %d groups: %v", groups, err)
	}
	defer s.Stop()
	testnats.Eventually(t, 10*time.Second, func() error {
		v, ok := s.GroupKV(kv.ShardOf("key-7", groups)).Get("key-7")
		if !ok || string(v.Data) != "v" {
			return errors.New("restarted node lacks key-7")
		}
		return nil
	})
}

// A node that joins a sharded cluster before a young group's leader wrote
// that group's records learns the group's members from group 0's verified
// records (they are the bootstrap's): with none, it would drop the group's
// leader as an unknown sender once it is added, and a group of two voters
// would lose its quorum.
func TestJoinerLearnsAYoungGroupsMembersFromGroupZero(t *testing.T) {
	c := newTestCluster(t, 2, 2, nil) // one group: the stream holds group 0's records only
	c.leader()
	joiner := &Server{cfg: Config{Conn: testnats.Connect(t, c.ns)}, log: testLogger()}
	testnats.Eventually(t, 10*time.Second, func() error {
		got := joiner.joinMembers(c.servers[0].Identity().ClusterID, 3)
		if len(got) != 2 {
			return fmt.Errorf("learned %d members of group 3, want group 0's 2", len(got))
		}
		return nil
	})
}
