package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
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
	// ErrBadRecord: a record could not be read.
	ErrBadRecord = errors.New("membership: malformed record")
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

func (s *Stream) publish(ctx context.Context, subj string, r Record, opts ...jetstream.PublishOpt) (uint64, error) {
	r.V, r.Cluster = FormatVersion, s.cfg.Cluster
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("membership: encode %s record: %w", r.Kind, err)
	}
	ack, err := s.cfg.JS.Publish(ctx, subj, data, opts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: another membership request was submitted first; look at `raftbus member list` and retry", ErrConflict)
		}
		return 0, fmt.Errorf("membership: publish %s record: %w", r.Kind, err)
	}
	return ack.Sequence, nil
}

// Announce records that an incarnation came up.
func (s *Stream) Announce(ctx context.Context, a Announce) error {
	_, err := s.publish(ctx, s.subject(string(KindAnnounce), a.Incarnation.String()), Record{Kind: KindAnnounce, Announce: &a})
	return err
}

// Submit records an operator request. expectLast is the sequence of the
// last request the operator saw (0: none); if another request was recorded
// since, Submit fails with ErrConflict and records nothing. The request ID
// also de-duplicates retries of the same submission.
func (s *Stream) Submit(ctx context.Context, r Request, expectLast uint64) (uint64, error) {
	return s.publish(ctx, s.subject(string(KindRequest)), Record{Kind: KindRequest, Request: &r},
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

// LastCommitted returns the newest committed-change record, or nil.
func (s *Stream) LastCommitted(ctx context.Context) (*Committed, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, s.subject(string(KindCommitted)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("membership: last committed record: %w", err)
	}
	r, err := decodeRecord(m.Data, m.Sequence)
	if err != nil {
		return nil, err
	}
	return r.Committed, nil
}

// PublishOutcome records how a request was settled. Re-publishing the same
// outcome (a new leader repeating it) is de-duplicated by the server.
func (s *Stream) PublishOutcome(ctx context.Context, o Outcome) error {
	_, err := s.publish(ctx, s.subject(string(KindOutcome), o.RequestID), Record{Kind: KindOutcome, Outcome: &o},
		jetstream.WithMsgID("outcome-"+o.RequestID))
	return err
}

// PublishCommitted records a committed change; de-duplicated by index.
func (s *Stream) PublishCommitted(ctx context.Context, c Committed) error {
	_, err := s.publish(ctx, s.subject(string(KindCommitted)), Record{Kind: KindCommitted, Committed: &c},
		jetstream.WithMsgID(fmt.Sprintf("committed-%d", c.Index)))
	return err
}

// ReadAll returns every record from the first to the last sequence at the
// time of the call, in order. Undecodable records are returned as an error.
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
		if k == KindAnnounce || k == KindOutcome {
			cfg.FilterSubjects = append(cfg.FilterSubjects, s.subject(string(k), "*"))
		} else {
			cfg.FilterSubjects = append(cfg.FilterSubjects, s.subject(string(k)))
		}
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
		seq := md.Sequence.Stream
		r, err := decodeRecord(msg.Data(), seq)
		if err != nil {
			return err
		}
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

// WaitOutcome waits for the outcome of request id.
func (s *Stream) WaitOutcome(ctx context.Context, id string) (Outcome, error) {
	var out Outcome
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.subject(string(KindOutcome), id)}}
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
	msg, err := it.Next()
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		return out, fmt.Errorf("membership: wait for outcome: %w", err)
	}
	md, _ := msg.Metadata()
	var seq uint64
	if md != nil {
		seq = md.Sequence.Stream
	}
	r, err := decodeRecord(msg.Data(), seq)
	if err != nil {
		return out, err
	}
	return *r.Outcome, nil
}
