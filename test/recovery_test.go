package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
	"github.com/raftbus/raftbus/raftbridge"
	"github.com/raftbus/raftbus/server"
)

// Reference node test 2: a node is halted without a graceful stop while
// writes are in flight, and restarted from its data directory. Every
// acknowledged write is present on every node, each applied exactly once
// (a write applied twice would carry a later modification index than the
// one acknowledged).
func TestCrashRestartKeepsAcknowledgedWrites(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{SnapshotEntries: 300, CompactionOverhead: 100})
	c.waitLeader()

	var mu sync.Mutex
	acked := map[string]uint64{}
	urls := &urlList{urls: []string{c.servers[0].URL(), c.servers[1].URL(), c.servers[2].URL()}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%05d", w, k)
				// Writes go through every node; node 2 is the one that
				// crashes, and its acknowledged writes must survive too.
				idx, _, err := put(urls.get(k%3), key, smallValue(k))
				if err == nil {
					mu.Lock()
					acked[key] = idx
					mu.Unlock()
				}
			}
		}(w)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	testnats.Eventually(t, 30*time.Second, func() error {
		if n := count(); n < 300 {
			return fmt.Errorf("%d writes acknowledged", n)
		}
		return nil
	})
	victim := c.servers[1]
	c.servers[1] = nil
	victim.Halt()
	before := count()
	testnats.Eventually(t, 30*time.Second, func() error {
		if n := count(); n < before+300 {
			return fmt.Errorf("%d writes acknowledged since the crash", n-before)
		}
		return nil
	})
	urls.set(1, c.start(1, nil).URL())
	testnats.Eventually(t, 30*time.Second, func() error {
		if n := count(); n < before+600 {
			return fmt.Errorf("%d writes acknowledged since the crash", n-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	c.waitSame(count())
	for _, s := range c.up() {
		for key, idx := range acked {
			v, ok := s.KV().Get(key)
			if !ok {
				t.Fatalf("%s lost acknowledged write %s", s.Identity().Name, key)
			}
			if v.ModIndex != idx || v.CreateIndex != idx {
				t.Fatalf("%s: %s applied at create %d / mod %d, acknowledged at %d", s.Identity().Name, key, v.CreateIndex, v.ModIndex, idx)
			}
		}
	}
}

// Reference node test 3: a node stopped while the others apply enough to
// compact the log past it catches up through a snapshot carried over NATS;
// the large variant carries a 50 MiB state.
func TestSnapshotCatchUp(t *testing.T) {
	cases := []struct {
		name  string
		count int
		value func(int) []byte
	}{
		{"small", 600, smallValue},
		{"12MiB", 96, bigValue},
	}
	if longMode() {
		// The 50 MiB state of the original acceptance run: minutes under
		// -race on two cores, so only with -long / RAFTBUS_LONG=1.
		cases = append(cases, struct {
			name  string
			count int
			value func(int) []byte
		}{"50MiB", 400, bigValue})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.name != "small" {
				t.Skip("large snapshot skipped in -short mode")
			}
			c := newSrvCluster(t, 3, node.Config{SnapshotEntries: 50, CompactionOverhead: 10})
			c.waitLeader()
			writeMany(t, c.up(), "early", 20, smallValue)
			c.waitSame(20)
			lagger := c.servers[2]
			c.servers[2] = nil
			lagger.Stop()

			writeMany(t, c.up(), "bulk", tc.count, tc.value)
			c.waitSame(20 + tc.count)
			// The log the lagging node needs is gone from the others.
			for _, s := range c.up() {
				first, _ := snapshotFirstIndex(s)
				if first <= lagger.Node().AppliedIndex()+1 {
					t.Fatalf("%s still has the log from %d; the lagging node stopped at %d", s.Identity().Name, first, lagger.Node().AppliedIndex())
				}
			}
			back := c.start(2, nil)
			c.waitSame(20 + tc.count)
			st := bridgeStats(back)
			if st.SnapshotsReceived[raftbridge.SnapshotSuccess] == 0 {
				t.Fatalf("the lagging node caught up without receiving a snapshot: %+v", st.SnapshotsReceived)
			}
		})
	}
}

// bigValue is a 128 KiB value (values of 480 KiB, 16 in flight, starved
// heartbeats on two loaded cores and cost the leader), so ~100 writes make a snapshot of
// many chunks.
func bigValue(k int) []byte { return bytes.Repeat([]byte{byte('a' + k%26)}, 128<<10) }

// Reference node test 4: identity. A wiped data directory started as the
// old member (same name, same Raft ID, same cluster) gets a new incarnation
// and cannot impersonate the old one: the peers drop its traffic as a stale
// incarnation and it receives no data. A directory of another cluster or
// Raft ID is refused with an error naming both sides.
func TestIdentityCannotBeImpersonated(t *testing.T) {
	c := newSrvCluster(t, 3, node.Config{})
	c.waitLeader()
	writeMany(t, c.up(), "k", 50, smallValue)
	c.waitSame(50)

	old := c.servers[1]
	oldInc := old.Identity().Incarnation
	c.servers[1] = nil
	old.Stop()

	// Refused: the directory belongs to another cluster than expected.
	other := uuid.New()
	_, err := c.tryStart(1, nil, datadir.Expect{ClusterID: other, Source: "--cluster"})
	if !errors.Is(err, datadir.ErrMismatch) || !strings.Contains(err.Error(), c.cluster.String()) || !strings.Contains(err.Error(), other.String()) {
		t.Fatalf("mismatched cluster: got %v, want an error naming %s and %s", err, c.cluster, other)
	}
	_, err = c.tryStart(1, nil, datadir.Expect{RaftID: 7, Source: "--raft-id"})
	if !errors.Is(err, datadir.ErrMismatch) || !strings.Contains(err.Error(), "0000000000000002") || !strings.Contains(err.Error(), "0000000000000007") {
		t.Fatalf("mismatched raft ID: got %v", err)
	}

	// Refused: the identity survived but the Raft log was lost.
	raftDir := datadir.RaftDir(c.dirs[1])
	if err := os.RemoveAll(raftDir); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tryStart(1, nil, datadir.Expect{}); err == nil || !strings.Contains(err.Error(), "Raft log was lost") {
		t.Fatalf("restart with a lost Raft log: %v", err)
	}

	// Wipe and recreate with the old name, Raft ID and cluster.
	if err := os.RemoveAll(c.dirs[1]); err != nil {
		t.Fatal(err)
	}
	id, err := datadir.Create(c.dirs[1], datadir.Identity{ClusterID: c.cluster, RaftID: 2, Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Incarnation == oldInc {
		t.Fatal("a wiped directory got the old incarnation back")
	}
	// The operator even repeats the original bootstrap: the wiped node
	// believes it is member 2 of a fresh three-node cluster and campaigns.
	var boot []node.Member
	for i, o := range c.idents {
		m := node.Member{ID: raftbridge.ID(o.RaftID), Name: o.Name, Incarnation: o.Incarnation, PublicKey: o.PublicKey}
		if i == 1 {
			m.Incarnation, m.PublicKey = id.Incarnation, id.PublicKey
		}
		boot = append(boot, m)
	}
	imp := c.start(1, boot)
	testnats.Eventually(t, 15*time.Second, func() error {
		var n uint64
		for _, s := range []*server.Server{c.servers[0], c.servers[2]} {
			n += s.Node().Status().Dropped["stale_incarnation"]
		}
		if n == 0 {
			return fmt.Errorf("no stale_incarnation drops yet")
		}
		return nil
	})
	writeMany(t, []*server.Server{c.servers[0], c.servers[2]}, "more", 50, smallValue)
	if imp.KV().Len() != 0 {
		t.Fatalf("the impersonator received %d keys", imp.KV().Len())
	}
	for _, m := range c.servers[0].Node().Members() {
		if m.ID == 2 && m.Incarnation != oldInc {
			t.Fatalf("membership now names the impersonator's incarnation %s", m.Incarnation)
		}
	}
}

func snapshotFirstIndex(s *server.Server) (uint64, error) {
	return s.Node().FirstIndex()
}

func bridgeStats(s *server.Server) raftbridge.Stats { return s.Node().TransportStats() }

// urlList is the set of node URLs the writers use, updated when a node
// restarts on a new port.
type urlList struct {
	mu   sync.Mutex
	urls []string
}

func (u *urlList) get(i int) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.urls[i]
}

func (u *urlList) set(i int, url string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.urls[i] = url
}
