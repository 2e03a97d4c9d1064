package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Errors of the membership package. Callers match them with errors.Is.
var (
	// ErrStreamMissing: the cluster's membership stream does not exist.
	// It is never read as "no members".
	ErrStreamMissing = errors.New("membership: stream not found")
	// ErrStreamMismatch: the stream exists but is not the one the cluster
	// was bound to (deleted and recreated).
	ErrStreamMismatch = errors.New("membership: stream was recreated")
	// ErrConflict: a concurrent operator changed membership first.
	ErrConflict = errors.New("membership: conflicting concurrent change")
	// ErrBadRecord: a record could not be read. Readers skip such records
	// (Record.Invalid) instead of failing.
	ErrBadRecord = errors.New("membership: malformed record")
	// ErrNoSigner: a node record was to be written without the node's
	// incarnation and key (StreamConfig.Incarnation, Signer).
	ErrNoSigner = errors.New("membership: writing node records needs the node's incarnation and key")
	// ErrRejected wraps a rejected request's reason (see Outcome.Code).
	ErrRejected = errors.New("membership: request rejected")
	// ErrEmpty: the stream holds no committed change although the cluster
	// exists; it is not read as "no members".
	ErrEmpty = errors.New("membership: stream holds no committed changes")
	// ErrAlreadySettled is returned by Cluster.Change for a request that was
	// settled before (by an earlier leader, say).
	ErrAlreadySettled = errors.New("membership: request already settled")
)

// StreamConfig names a cluster's membership stream.
type StreamConfig struct {
	// JS is the JetStream context. Required.
	JS jetstream.JetStream
	// Prefix is the subject prefix. Default "raftbus".
	Prefix string
	// Cluster is the cluster ID. Required.
	Cluster uuid.UUID
	// Replicas of the stream when it is created: 3 on a three-server NATS
	// cluster, 1 on a single server. Default 1.
	Replicas int
	// Incarnation and Signer are the writing node's incarnation and nkey:
	// every announcement, outcome and committed record goes on a subject
	// ending in Incarnation and is signed with Signer. Readers and the
	// admin side (which writes only requests) leave them unset.
	Incarnation uuid.UUID
	Signer      nkeys.KeyPair
	// Group is the Raft group whose membership this stream view reads and
	// writes; 0 is the default group, whose subjects are those of a
	// single-group cluster. Every group shares the cluster's one stream:
	// a group g > 0 has its own requests, outcomes and committed records
	// on subjects with the extra token g<g> (GroupToken), and every
	// group's readers read the hosts' announcements from group 0's
	// subject, because an announcement is about a host, not a group.
	Group uint64
}

func (c *StreamConfig) validate() error {
	if c.JS == nil {
		return errors.New("membership: a JetStream context is required")
	}
	if c.Cluster == uuid.Nil {
		return errors.New("membership: a cluster ID is required")
	}
	if c.Prefix == "" {
		c.Prefix = "raftbus"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("membership: replicas must be 1 to 5, got %d", c.Replicas)
	}
	return nil
}

// StreamName is the JetStream stream of a cluster's membership records.
func StreamName(prefix string, cluster uuid.UUID) string {
	return strings.ReplaceAll(prefix, ".", "_") + "-members-" + cluster.String()
}

// Stream reads and writes one cluster's membership records.
type Stream struct {
	cfg    StreamConfig
	name   string
	stream jetstream.Stream
}

// subject is a subject of the whole cluster's stream, outside any group
// (announcements, and the stream's own subject space).
func (s *Stream) subject(parts ...string) string {
	return s.cfg.Prefix + "." + s.cfg.Cluster.String() + ".members." + strings.Join(parts, ".")
}

// gsubject is a subject of this view's group: group 0's carry no group
// token, so that the streams and permissions of single-group clusters
// keep working unchanged.
func (s *Stream) gsubject(parts ...string) string {
	if s.cfg.Group == 0 {
		return s.subject(parts...)
	}
	return s.subject(append([]string{GroupToken(s.cfg.Group)}, parts...)...)
}

// dedupKey scopes a de-duplication key to this view's group: the
// stream's message IDs are one namespace for every group, and a host
// writes the same index (and the same automatic promotion's ID) in many
// groups. Group 0's keys are unchanged.
func (s *Stream) dedupKey(key string) string {
	if s.cfg.Group == 0 {
		return key
	}
	return GroupToken(s.cfg.Group) + "-" + key
}

// GroupToken is the subject token of Raft group g > 0 on the membership
// stream: "g" and the group in decimal, without leading zeros, so that
// NATS permissions can name every group's records of one kind and
// incarnation as members.*.<kind>.<incarnation>. Group 0 has none.
func GroupToken(g uint64) string { return "g" + strconv.FormatUint(g, 10) }

// parseGroupToken reports whether tok is a group token (g and digits) and
// which group it names; ok is false for a token that only looks like one
// (g0, leading zeros, overflow), which names no group any reader reads.
func parseGroupToken(tok string) (g uint64, isGroup, ok bool) {
	digits, found := strings.CutPrefix(tok, "g")
	if !found || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false, false
	}
	g, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || g == 0 || GroupToken(g) != tok {
		return 0, true, false
	}
	return g, true, true
}

// OpenStream binds to the cluster's existing stream; it fails with
// ErrStreamMissing when there is none.
func OpenStream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Stream{cfg: cfg, name: StreamName(cfg.Prefix, cfg.Cluster)}
	st, err := cfg.JS.Stream(ctx, s.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s (is the cluster ID right, and has its leader started?)", ErrStreamMissing, s.name)
	}
	if err != nil {
		return nil, fmt.Errorf("membership: open stream %s: %w", s.name, err)
	}
	s.stream = st
	return s, nil
}

// CreateStream creates the cluster's stream, or binds to it if it exists.
// Only a leader that finds its cluster unbound creates the stream.
func CreateStream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Stream{cfg: cfg, name: StreamName(cfg.Prefix, cfg.Cluster)}
	st, err := cfg.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:        s.name,
		Description: "raftbus membership records of cluster " + cfg.Cluster.String(),
		Subjects:    []string{s.subject(">")},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Minute,
		// The stream is an audit log: nothing is deleted or purged.
		DenyDelete: true,
		DenyPurge:  true,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return OpenStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("membership: create stream %s: %w", s.name, err)
	}
	s.stream = st
	return s, nil
}

// Name returns the stream's name.
func (s *Stream) Name() string { return s.name }

// Groups returns the Raft groups other than 0 that have committed records
// on the stream, ascending: what a tool that looks at every group (such
// as `raftbus nats-config`) reads besides group 0; InGroup reads each.
func (s *Stream) Groups(ctx context.Context) ([]uint64, error) {
	si, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(s.subject("*", string(KindCommitted), "*")))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrStreamMissing, s.name)
	}
	if err != nil {
		return nil, fmt.Errorf("membership: stream groups %s: %w", s.name, err)
	}
	seen := map[uint64]bool{}
	for subj := range si.State.Subjects {
		tail, _ := strings.CutPrefix(subj, s.subject(""))
		tok, _, _ := strings.Cut(tail, ".")
		if g, _, ok := parseGroupToken(tok); ok {
			seen[g] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// InGroup returns a view of the same stream for Raft group g, reading and
// writing as this view does.
func (s *Stream) InGroup(g uint64) *Stream {
	c := *s
	c.cfg.Group = g
	return &c
}

// Info describes the stream's identity and extent.
type Info struct {
	Created  time.Time
	FirstSeq uint64
	LastSeq  uint64
	Msgs     uint64
}

// Info reads the stream's identity; a deleted stream yields ErrStreamMissing.
func (s *Stream) Info(ctx context.Context) (Info, error) {
	si, err := s.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Info{}, fmt.Errorf("%w: %s", ErrStreamMissing, s.name)
	}
	if err != nil {
		return Info{}, fmt.Errorf("membership: stream info %s: %w", s.name, err)
	}
	return Info{Created: si.Created, FirstSeq: si.State.FirstSeq, LastSeq: si.State.LastSeq, Msgs: si.State.Msgs}, nil
}

func (s *Stream) publish(ctx context.Context, subj string, r Record, signed bool, opts ...jetstream.PublishOpt) (uint64, error) {
	r.V, r.Cluster = FormatVersion, s.cfg.Cluster
	if r.Kind != KindAnnounce {
		// Signed with the subject, so a record cannot be replayed onto
		// another group's subject; 0 is omitted, keeping group 0's bytes.
		r.Group = s.cfg.Group
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("membership: encode %s record: %w", r.Kind, err)
	}
	msg := &nats.Msg{Subject: subj, Data: data}
	if signed {
		if msg.Header, err = sign(s.cfg.Signer, subj, data); err != nil {
			return 0, err
		}
	}
	ack, err := s.cfg.JS.PublishMsg(ctx, msg, opts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: another membership request was submitted first; look at `raftbus member list` and retry", ErrConflict)
		}
		return 0, fmt.Errorf("membership: publish %s record: %w", r.Kind, err)
	}
	return ack.Sequence, nil
}

// writer checks that this stream may write node records.
func (s *Stream) writer(kind Kind) error {
	if s.cfg.Signer == nil || s.cfg.Incarnation == uuid.Nil {
		return fmt.Errorf("%w (%s record)", ErrNoSigner, kind)
	}
	return nil
}

// Announce records that this node's incarnation came up, on the subject of
// its incarnation, signed, with its public key.
func (s *Stream) Announce(ctx context.Context, a Announce) error {
	if err := s.writer(KindAnnounce); err != nil {
		return err
	}
	if a.Incarnation == uuid.Nil {
		a.Incarnation = s.cfg.Incarnation
	}
	if a.Incarnation != s.cfg.Incarnation {
		return fmt.Errorf("membership: incarnation %s cannot announce %s", s.cfg.Incarnation, a.Incarnation)
	}
	pub, err := s.cfg.Signer.PublicKey()
	if err != nil {
		return fmt.Errorf("membership: signer key: %w", err)
	}
	a.PublicKey = pub
	_, err = s.publish(ctx, s.subject(string(KindAnnounce), a.Incarnation.String()), Record{Kind: KindAnnounce, Announce: &a}, true)
	return err
}

// Submit records an operator request. expectLast is the sequence of the
// last request the operator saw (0: none); if another request was recorded
// since, Submit fails with ErrConflict and records nothing. The request ID
// also de-duplicates retries of the same submission.
func (s *Stream) Submit(ctx context.Context, r Request, expectLast uint64) (uint64, error) {
	return s.publish(ctx, s.gsubject(string(KindRequest)), Record{Kind: KindRequest, Request: &r}, false,
		jetstream.WithMsgID(s.dedupKey("request-"+r.ID)), jetstream.WithExpectLastSequencePerSubject(expectLast))
}

// LastRequestSeq returns the sequence of the newest request, 0 if none.
func (s *Stream) LastRequestSeq(ctx context.Context) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, s.gsubject(string(KindRequest)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("membership: last request: %w", err)
	}
	return m.Sequence, nil
}

// CommittedIndex returns the Raft index of the newest committed change the
// stream holds that readers accept (0 if none): forged or unverifiable
// records do not count, so a leader re-publishes what they would hide.
func (s *Stream) CommittedIndex(ctx context.Context) (uint64, error) {
	recs, err := s.ReadAll(ctx, KindCommitted)
	if err != nil {
		return 0, err
	}
	return Rebuild(recs).LastIndex(), nil
}

// PublishOutcome records how a request was settled, on this node's outcome
// subject for the request, signed. Re-publishing the same outcome (a
// leader repeating it) is de-duplicated by the server.
func (s *Stream) PublishOutcome(ctx context.Context, o Outcome) error {
	if err := s.writer(KindOutcome); err != nil {
		return err
	}
	id, err := dedupID(s.cfg.Signer, s.dedupKey("outcome-"+o.RequestID))
	if err != nil {
		return err
	}
	_, err = s.publish(ctx, s.gsubject(string(KindOutcome), o.RequestID, s.cfg.Incarnation.String()), Record{Kind: KindOutcome, Outcome: &o}, true,
		jetstream.WithMsgID(id))
	return err
}

// PublishCommitted records a committed change on this node's committed
// subject, signed; de-duplicated by index and signer.
func (s *Stream) PublishCommitted(ctx context.Context, c Committed) error {
	if err := s.writer(KindCommitted); err != nil {
		return err
	}
	id, err := dedupID(s.cfg.Signer, s.dedupKey(fmt.Sprintf("committed-%d", c.Index)))
	if err != nil {
		return err
	}
	_, err = s.publish(ctx, s.gsubject(string(KindCommitted), s.cfg.Incarnation.String()), Record{Kind: KindCommitted, Committed: &c}, true,
		jetstream.WithMsgID(id))
	return err
}

// ReadAll returns every record from the first to the last sequence at the
// time of the call, in order. Malformed or badly signed records are
// returned too, marked Invalid; Rebuild skips and counts them.
func (s *Stream) ReadAll(ctx context.Context, kinds ...Kind) ([]Record, error) {
	if _, err := s.Info(ctx); err != nil {
		return nil, err
	}
	var out []Record
	err := s.each(ctx, kinds, 1, func(r Record) bool {
		out = append(out, r)
		return true
	}, true)
	return out, err
}

// each delivers records of the given kinds (all when none) from sequence
// from on, until fn returns false or ctx ends; when bounded, also once no
// matching record is pending (instead of waiting for new ones).
func (s *Stream) each(ctx context.Context, kinds []Kind, from uint64, fn func(Record) bool, bounded bool) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	}
	cfg.FilterSubjects = s.filters(kinds)
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("membership: read stream %s: %w", s.name, err)
	}
	// The client never deletes an ordered consumer it stops: the server
	// would keep it for its inactivity threshold (minutes), and with a
	// manager per Raft group reading the stream, they add up.
	defer s.deleteConsumer(cons)
	if bounded {
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("membership: read stream %s: %w", s.name, err)
		}
		if ci.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("membership: read stream %s: %w", s.name, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("membership: read stream %s: %w", s.name, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("membership: record metadata: %w", err)
		}
		r, ours := s.check(msg.Subject(), msg.Data(), msg.Headers(), md.Sequence.Stream)
		r.Pending = md.NumPending
		if ours && !fn(r) || (bounded && md.NumPending == 0) {
			return nil
		}
	}
}

// deleteConsumer deletes an ordered consumer's current server consumer;
// failing to is harmless (it expires).
func (s *Stream) deleteConsumer(cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil || ci.Name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.stream.DeleteConsumer(ctx, ci.Name)
}

// Watch calls fn for every record of the given kinds from sequence from on
// (1: the beginning), as they are written, until ctx ends or fn returns
// false.
func (s *Stream) Watch(ctx context.Context, from uint64, fn func(Record) bool, kinds ...Kind) error {
	return s.each(ctx, kinds, from, fn, false)
}

// filter is the subject filter of one kind of record of this view's
// group; announcements are every group's, on group 0's subject.
func (s *Stream) filter(k Kind) string {
	switch k {
	case KindAnnounce:
		return s.subject(string(k), "*")
	case KindCommitted:
		return s.gsubject(string(k), "*")
	case KindOutcome:
		return s.gsubject(string(k), "*", "*")
	}
	return s.gsubject(string(k))
}

// filters are the subject filters of the given kinds, or of every record
// this view's group reads when none is given: the server then never
// delivers another group's records, which are neither read nor reported
// as invalid. Without kinds, group 0 reads every subject of each kind
// (malformed ones too, to be shown as rejected), but nothing under a
// group token.
func (s *Stream) filters(kinds []Kind) []string {
	var out []string
	for _, k := range kinds {
		out = append(out, s.filter(k))
	}
	if len(kinds) > 0 {
		return out
	}
	out = append(out, s.subject(string(KindAnnounce)), s.subject(string(KindAnnounce), ">"))
	if s.cfg.Group != 0 {
		return append(out, s.gsubject(">"))
	}
	for _, k := range []Kind{KindRequest, KindOutcome, KindCommitted} {
		out = append(out, s.subject(string(k)), s.subject(string(k), ">"))
	}
	return out
}

// check decodes a record and verifies that its subject, body and signature
// agree; it never fails: a record that does not pass is marked Invalid.
// ours is false for a record of another group (by its subject), which
// this view's readers skip silently: it is not theirs to judge.
func (s *Stream) check(subj string, data []byte, h nats.Header, seq uint64) (r Record, ours bool) {
	tail, _ := strings.CutPrefix(subj, s.subject(""))
	tokens := strings.Split(tail, ".")
	// A group token is never a kind: g<n> starts another group's subjects.
	var group uint64
	if g, isGroup, ok := parseGroupToken(tokens[0]); isGroup {
		if !ok || g != s.cfg.Group {
			return Record{Seq: seq, Subject: subj}, false
		}
		group, tokens = g, tokens[1:]
		if len(tokens) == 0 {
			tokens = []string{""}
		}
	} else if s.cfg.Group != 0 && tokens[0] != string(KindAnnounce) {
		return Record{Seq: seq, Subject: subj}, false // group 0's
	}
	r, err := decodeRecord(data, seq)
	r.Seq, r.Subject = seq, subj
	if err != nil {
		r.Kind = Kind(tokens[0])
		r.Invalid, r.Problem = RejectMalformed, err.Error()
		return r, true
	}
	bad := func(reason, format string, args ...any) (Record, bool) {
		r.Invalid, r.Problem = reason, fmt.Sprintf(format, args...)
		return r, true
	}
	want := map[Kind]int{KindRequest: 1, KindAnnounce: 2, KindCommitted: 2, KindOutcome: 3}[r.Kind]
	if tokens[0] != string(r.Kind) || len(tokens) != want {
		return bad(RejectWrongSource, "a %s record on subject %s", r.Kind, subj)
	}
	if r.Cluster != s.cfg.Cluster {
		return bad(RejectWrongSource, "record of cluster %s in the stream of cluster %s", r.Cluster, s.cfg.Cluster)
	}
	switch {
	case r.Kind == KindAnnounce && (group != 0 || r.Group != 0):
		return bad(RejectWrongSource, "announcement of group %d on subject %s: announcements are per host, on group 0's subject", r.Group, subj)
	case r.Group != group:
		// The body is signed with the subject: a record re-published on
		// another group's subject says which group it was written for.
		return bad(RejectWrongSource, "record of group %d on the subject of group %d", r.Group, group)
	}
	if r.Kind == KindRequest {
		return r, true // only the admin may publish requests; they carry no node signature
	}
	last := tokens[len(tokens)-1]
	src, err := uuid.Parse(last)
	if err != nil || src.String() != last || src == uuid.Nil {
		return bad(RejectWrongSource, "subject %s does not end in an incarnation", subj)
	}
	r.Source = src
	signer, reason, err := verify(subj, data, h)
	if err != nil {
		return bad(reason, "%v", err)
	}
	r.Signer = signer
	switch r.Kind {
	case KindAnnounce:
		if r.Announce.Incarnation != src || r.Announce.PublicKey != signer {
			return bad(RejectWrongSource, "announcement of %s (key %s) on the subject of %s signed by %s", r.Announce.Incarnation, r.Announce.PublicKey, src, signer)
		}
	case KindOutcome:
		if r.Outcome.RequestID != tokens[1] {
			return bad(RejectWrongSource, "outcome of request %s on the subject of request %s", r.Outcome.RequestID, tokens[1])
		}
	}
	return r, true
}

// WaitOutcome waits for the outcome of request id that d accepts: signed
// by a member of d (the membership the request was made against). Other
// outcome records of the request are skipped.
func (s *Stream) WaitOutcome(ctx context.Context, id string, d *Directory) (Outcome, error) {
	var out Outcome
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.gsubject(string(KindOutcome), id, "*")}}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return out, fmt.Errorf("membership: wait for outcome: %w", err)
	}
	defer s.deleteConsumer(cons)
	it, err := cons.Messages()
	if err != nil {
		return out, fmt.Errorf("membership: wait for outcome: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			return out, fmt.Errorf("membership: wait for outcome: %w", err)
		}
		var seq uint64
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		r, ours := s.check(msg.Subject(), msg.Data(), msg.Headers(), seq)
		if reason, _ := d.judgeOutcome(r); ours && reason == "" {
			return *r.Outcome, nil
		}
	}
}

// As returns a view of the same stream that writes as incarnation inc,
// signing with kp: for a joining node that opened the stream before it
// had its key at hand, and for tests.
func (s *Stream) As(inc uuid.UUID, kp nkeys.KeyPair) (*Stream, error) {
	if inc == uuid.Nil || kp == nil {
		return nil, fmt.Errorf("%w: As needs an incarnation and a key", ErrNoSigner)
	}
	c := *s
	c.cfg.Incarnation, c.cfg.Signer = inc, kp
	return &c, nil
}
