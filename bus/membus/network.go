package membus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus/internal/outq"
)

// ErrNetworkClosed is returned by NewBus after the network was closed.
var ErrNetworkClosed = errors.New("membus: network closed")

// reorderHold is how long a frame picked for reordering waits for a later
// frame to overtake it before it is delivered anyway, so that reordering
// never turns into loss.
const reorderHold = 50 * time.Millisecond

// Network is an in-memory message switch: buses attached to it exchange
// frames by subject, like NATS clients of one server, through a fault
// injector. All fault decisions come from one seeded random source taken
// under the network's mutex, so a given seed yields the same sequence of
// decisions, one set per published frame, in publish order.
type Network struct {
	mu     sync.Mutex
	rng    *rand.Rand
	closed bool
	buses  map[*Bus]struct{}
	subs   []*subscription

	dropRate, dupRate, reorderRate float64
	minDelay, maxDelay             time.Duration
	partitions                     map[[2]uuid.UUID]struct{}
	isolated                       map[uuid.UUID]struct{}
	stalled                        map[uuid.UUID]chan struct{} // closed on Unstall
	pump                           pump                        // manual mode (network_pump.go)

	// trace, when set (by tests of this package), sees every decision.
	trace func(src, dst uuid.UUID, d decision)
}

// decision is what the fault injector does with one frame.
type decision struct {
	drop    bool // partitioned, isolated, or lost at the drop rate
	dup     bool
	reorder bool
	delay   time.Duration
}

type subscription struct {
	tokens []string // subject pattern split at '.'; may end with ">"
	inbox  *inbox
}

// NewNetwork returns an empty network whose fault decisions are drawn from
// a random source seeded with seed. No faults are enabled initially.
func NewNetwork(seed int64) *Network {
	return &Network{
		rng:        rand.New(rand.NewSource(seed)),
		buses:      make(map[*Bus]struct{}),
		partitions: make(map[[2]uuid.UUID]struct{}),
		isolated:   make(map[uuid.UUID]struct{}),
		stalled:    make(map[uuid.UUID]chan struct{}),
	}
}

func clamp01(p float64) float64 { return min(max(p, 0), 1) }

// SetDropRate makes the network lose each frame with probability p.
func (n *Network) SetDropRate(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropRate = clamp01(p)
}

// SetDuplicateRate makes the network deliver each frame twice with probability p.
func (n *Network) SetDuplicateRate(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dupRate = clamp01(p)
}

// SetReorderRate makes the network hold back each frame with probability p
// and deliver it after the next frame for the same bus (or after a short
// hold when no later frame comes).
func (n *Network) SetReorderRate(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reorderRate = clamp01(p)
}

// SetDelay delays each frame by a uniformly drawn duration in [lo, hi].
// Frames with different delays overtake each other. Zero values disable it.
func (n *Network) SetDelay(lo, hi time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	lo = max(lo, 0)
	n.minDelay, n.maxDelay = lo, max(hi, lo)
}

func pairKey(a, b uuid.UUID) [2]uuid.UUID {
	if bytes.Compare(a[:], b[:]) > 0 {
		a, b = b, a
	}
	return [2]uuid.UUID{a, b}
}

// Partition drops all frames between incarnations a and b, both directions.
func (n *Network) Partition(a, b uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.partitions[pairKey(a, b)] = struct{}{}
}

// Isolate drops all frames sent by or to incarnation a.
func (n *Network) Isolate(a uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[a] = struct{}{}
}

// Heal removes every partition and isolation. Rates, delays and stalls are
// left as they are.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.partitions)
	clear(n.isolated)
}

// Stall stops the network from taking frames addressed to dst: a sender's
// publish waits, as a NATS publish does on a full socket, so the senders'
// queues for dst fill up and Send starts returning ErrQueueFull.
func (n *Network) Stall(dst uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.stalled[dst]; !ok {
		n.stalled[dst] = make(chan struct{})
	}
}

// Unstall lets frames to dst flow again.
func (n *Network) Unstall(dst uuid.UUID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.stalled[dst]; ok {
		close(ch)
		delete(n.stalled, dst)
	}
}

// Inject publishes frame on subject as an outside client would: it goes to
// every bus whose inbox matches, bypassing the fault injector. The network
// copies frame.
func (n *Network) Inject(subject string, frame []byte) {
	n.mu.Lock()
	targets := n.match(subject)
	n.mu.Unlock()
	for _, in := range targets {
		in.push(inFrame{subject: subject, data: append([]byte(nil), frame...)}, false)
	}
}

// Close closes every bus on the network and refuses new ones.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	buses := make([]*Bus, 0, len(n.buses))
	for b := range n.buses {
		buses = append(buses, b)
	}
	n.mu.Unlock()
	for _, b := range buses {
		_ = b.Close()
	}
}

func (n *Network) attach(b *Bus) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrNetworkClosed
	}
	n.buses[b] = struct{}{}
	return nil
}

func (n *Network) detach(b *Bus) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.buses, b)
}

func (n *Network) subscribe(pattern string, in *inbox) *subscription {
	s := &subscription{tokens: splitPattern(pattern), inbox: in}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.subs = append(n.subs, s)
	return s
}

func (n *Network) unsubscribe(s *subscription) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, x := range n.subs {
		if x == s {
			n.subs = append(n.subs[:i], n.subs[i+1:]...)
			return
		}
	}
}

// waitUnstalled blocks while dst is stalled. It returns false if ctx ended.
func (n *Network) waitUnstalled(ctx context.Context, dst uuid.UUID) bool {
	for {
		n.mu.Lock()
		ch, stalled := n.stalled[dst]
		n.mu.Unlock()
		if !stalled {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// route draws the fault decision for one frame from src to dst and returns
// the inboxes subscribed to subject. In manual mode a frame that survives
// the decision is held instead (held set, no inboxes), or lost to the
// hold queue's bound (d.drop set).
func (n *Network) route(from *Bus, f *outq.Frame) (d decision, targets []*inbox, held bool) {
	subject, src, dst := f.Subject, from.cfg.Self, f.To
	n.mu.Lock()
	defer n.mu.Unlock()
	// Always draw the same number of values so that the decision sequence
	// depends only on the seed and the number of frames, not on which
	// faults happen to be enabled.
	drop, dup, reorder, delay := n.rng.Float64(), n.rng.Float64(), n.rng.Float64(), n.rng.Float64()
	d = decision{
		drop:    drop < n.dropRate,
		dup:     dup < n.dupRate,
		reorder: reorder < n.reorderRate,
		delay:   n.minDelay + time.Duration(delay*float64(n.maxDelay-n.minDelay)),
	}
	if _, ok := n.isolated[src]; ok {
		d.drop = true
	}
	if _, ok := n.isolated[dst]; ok {
		d.drop = true
	}
	if _, ok := n.partitions[pairKey(src, dst)]; ok {
		d.drop = true
	}
	if n.trace != nil {
		n.trace(src, dst, d)
	}
	if d.drop {
		return d, nil, false
	}
	if taken, lost := n.hold(from, subject, dst, f.Kind, f.Payloads, f.Data); taken {
		d.drop = lost
		return d, nil, !lost
	}
	return d, n.match(subject), false
}

// match returns the inboxes whose pattern matches subject, with NATS
// semantics: '*' matches one token, a final '>' one or more. n.mu is held.
func (n *Network) match(subject string) []*inbox {
	var out []*inbox
	for _, s := range n.subs {
		if subjectMatches(s.tokens, subject) {
			out = append(out, s.inbox)
		}
	}
	return out
}

func splitPattern(p string) []string { return strings.Split(p, ".") }

func subjectMatches(pattern []string, subject string) bool {
	rest := subject
	for i, p := range pattern {
		if p == ">" {
			return i == len(pattern)-1 && validTail(rest)
		}
		if rest == "" {
			return false
		}
		tok, after, found := strings.Cut(rest, ".")
		if tok == "" || (p != "*" && p != tok) {
			return false
		}
		if !found {
			rest = ""
			if i != len(pattern)-1 {
				return false
			}
			continue
		}
		if after == "" {
			return false // trailing '.' is not a valid subject
		}
		rest = after
	}
	return rest == ""
}

// validTail reports whether s is one or more non-empty tokens.
func validTail(s string) bool {
	return s != "" && s[0] != '.' && s[len(s)-1] != '.' && !strings.Contains(s, "..")
}

func (d decision) String() string {
	return fmt.Sprintf("drop=%t dup=%t reorder=%t delay=%s", d.drop, d.dup, d.reorder, d.delay)
}
