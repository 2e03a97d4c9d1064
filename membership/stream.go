package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

func (s *Stream) subject(parts ...string) string {
	return s.cfg.Prefix + "." + s.cfg.Cluster.String() + ".members." + strings.Join(parts, ".")
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
	return s.publish(ctx, s.subject(string(KindRequest)), Record{Kind: KindRequest, Request: &r}, false,
		jetstream.WithMsgID("request-"+r.ID), jetstream.WithExpectLastSequencePerSubject(expectLast))
}

// LastRequestSeq returns the sequence of the newest request, 0 if none.
func (s *Stream) LastRequestSeq(ctx context.Context) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, s.subject(string(KindRequest)))
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
	id, err := dedupID(s.cfg.Signer, "outcome-"+o.RequestID)
	if err != nil {
		return err
	}
	_, err = s.publish(ctx, s.subject(string(KindOutcome), o.RequestID, s.cfg.Incarnation.String()), Record{Kind: KindOutcome, Outcome: &o}, true,
		jetstream.WithMsgID(id))
	return err
}

// PublishCommitted records a committed change on this node's committed
// subject, signed; de-duplicated by index and signer.
func (s *Stream) PublishCommitted(ctx context.Context, c Committed) error {
	if err := s.writer(KindCommitted); err != nil {
		return err
	}
	id, err := dedupID(s.cfg.Signer, fmt.Sprintf("committed-%d", c.Index))
	if err != nil {
		return err
	}
	_, err = s.publish(ctx, s.subject(string(KindCommitted), s.cfg.Incarnation.String()), Record{Kind: KindCommitted, Committed: &c}, true,
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
	for _, k := range kinds {
		cfg.FilterSubjects = append(cfg.FilterSubjects, s.filter(k))
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("membership: read stream %s: %w", s.name, err)
	}
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
		r := s.check(msg.Subject(), msg.Data(), msg.Headers(), md.Sequence.Stream)
		r.Pending = md.NumPending
		if !fn(r) || (bounded && md.NumPending == 0) {
			return nil
		}
	}
}

// Watch calls fn for every record of the given kinds from sequence from on
// (1: the beginning), as they are written, until ctx ends or fn returns
// false.
func (s *Stream) Watch(ctx context.Context, from uint64, fn func(Record) bool, kinds ...Kind) error {
	return s.each(ctx, kinds, from, fn, false)
}

// filter is the subject filter of one kind of record.
func (s *Stream) filter(k Kind) string {
	switch k {
	case KindAnnounce, KindCommitted:
		return s.subject(string(k), "*")
	case KindOutcome:
		return s.subject(string(k), "*", "*")
	}
	return s.subject(string(k))
}

// check decodes a record and verifies that its subject, body and signature
// agree; it never fails: a record that does not pass is marked Invalid.
func (s *Stream) check(subj string, data []byte, h nats.Header, seq uint64) Record {
	tail, _ := strings.CutPrefix(subj, s.subject(""))
	tokens := strings.Split(tail, ".")
	r, err := decodeRecord(data, seq)
	r.Seq, r.Subject = seq, subj
	if err != nil {
		r.Kind = Kind(tokens[0])
		r.Invalid, r.Problem = RejectMalformed, err.Error()
		return r
	}
	bad := func(reason, format string, args ...any) Record {
		r.Invalid, r.Problem = reason, fmt.Sprintf(format, args...)
		return r
	}
	want := map[Kind]int{KindRequest: 1, KindAnnounce: 2, KindCommitted: 2, KindOutcome: 3}[r.Kind]
	if tokens[0] != string(r.Kind) || len(tokens) != want {
		return bad(RejectWrongSource, "a %s record on subject %s", r.Kind, subj)
	}
	if r.Cluster != s.cfg.Cluster {
		return bad(RejectWrongSource, "record of cluster %s in the stream of cluster %s", r.Cluster, s.cfg.Cluster)
	}
	if r.Kind == KindRequest {
		return r // only the admin may publish requests; they carry no node signature
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
	return r
}

// WaitOutcome waits for the outcome of request id that d accepts: signed
// by a member of d (the membership the request was made against). Other
// outcome records of the request are skipped.
func (s *Stream) WaitOutcome(ctx context.Context, id string, d *Directory) (Outcome, error) {
	var out Outcome
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.subject(string(KindOutcome), id, "*")}}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return out, fmt.Errorf("membership: wait for outcome: %w", err)
	}
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
		r := s.check(msg.Subject(), msg.Data(), msg.Headers(), seq)
		if reason, _ := d.judgeOutcome(r); reason == "" {
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
