package wire

import (
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/raftbus/raftbus/bus"
)

// ParseToken parses a canonical incarnation or cluster token: a UUID in its
// 36-character lowercase hyphenated form, not the nil UUID. Every other
// spelling (upper case, braces, urn: prefix, embedded '.', '*', '>' or
// white space) is rejected, so that one identity has exactly one subject.
func ParseToken(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%w: %q is not a 36-character lowercase UUID", bus.ErrInvalidToken, s)
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %q: %v", bus.ErrInvalidToken, s, err)
	}
	if id.String() != s {
		return uuid.Nil, fmt.Errorf("%w: %q is not in canonical lowercase form", bus.ErrInvalidToken, s)
	}
	if id == uuid.Nil {
		return uuid.Nil, fmt.Errorf("%w: the nil UUID is not an identity", bus.ErrInvalidToken)
	}
	return id, nil
}

// ValidateID reports whether id can be used as a subject token.
func ValidateID(id uuid.UUID) error {
	if id == uuid.Nil {
		return fmt.Errorf("%w: the nil UUID is not an identity", bus.ErrInvalidToken)
	}
	return nil
}

// ValidatePrefix checks a subject prefix: one or more dot-separated tokens
// of letters, digits, '-' and '_', not starting with '$' (reserved by NATS)
// nor equal to "_INBOX".
func ValidatePrefix(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty prefix", bus.ErrInvalidToken)
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return fmt.Errorf("%w: prefix %q has an empty token", bus.ErrInvalidToken, p)
		}
		for _, r := range tok {
			ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
			if !ok {
				return fmt.Errorf("%w: prefix %q contains %q (allowed: letters, digits, '-', '_' and '.' between tokens)", bus.ErrInvalidToken, p, r)
			}
		}
	}
	if strings.HasPrefix(p, "_INBOX") {
		return fmt.Errorf("%w: prefix %q is reserved for NATS inboxes", bus.ErrInvalidToken, p)
	}
	return nil
}

// ValidateKind checks a kind token.
func ValidateKind(k bus.Kind) error {
	if k == "" {
		return fmt.Errorf("%w: empty kind", bus.ErrInvalidToken)
	}
	for _, r := range k {
		if !(r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("%w: kind %q contains %q", bus.ErrInvalidToken, k, r)
		}
	}
	return nil
}

// Subject returns the subject on which src sends payloads of kind to dst:
// <prefix>.<cluster>.<dst>.<src>.<kind>. It does not validate its inputs;
// the buses validate prefix and identities once, at construction.
func Subject(prefix string, cluster, dst, src uuid.UUID, kind bus.Kind) string {
	var b strings.Builder
	b.Grow(len(prefix) + 3*37 + 1 + len(kind))
	b.WriteString(prefix)
	b.WriteByte('.')
	b.WriteString(cluster.String())
	b.WriteByte('.')
	b.WriteString(dst.String())
	b.WriteByte('.')
	b.WriteString(src.String())
	b.WriteByte('.')
	b.WriteString(string(kind))
	return b.String()
}

// InboxSubject returns the wildcard subject an incarnation subscribes to:
// <prefix>.<cluster>.<self>.>. Nothing else is ever delivered to it.
func InboxSubject(prefix string, cluster, self uuid.UUID) string {
	return prefix + "." + cluster.String() + "." + self.String() + ".>"
}

// ParseSubject splits a subject built by Subject under prefix. It fails for
// any subject that is not exactly of that form with canonical tokens.
func ParseSubject(prefix, subject string) (cluster, dst, src uuid.UUID, kind bus.Kind, err error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return uuid.Nil, uuid.Nil, uuid.Nil, "", fmt.Errorf("%w: subject %q lacks prefix %q", bus.ErrInvalidToken, subject, prefix)
	}
	toks := strings.Split(rest, ".")
	if len(toks) != 4 {
		return uuid.Nil, uuid.Nil, uuid.Nil, "", fmt.Errorf("%w: subject %q does not have the form %s.<cluster>.<dst>.<src>.<kind>", bus.ErrInvalidToken, subject, prefix)
	}
	if cluster, err = ParseToken(toks[0]); err != nil {
		return
	}
	if dst, err = ParseToken(toks[1]); err != nil {
		return
	}
	if src, err = ParseToken(toks[2]); err != nil {
		return
	}
	kind = bus.Kind(toks[3])
	err = ValidateKind(kind)
	return
}
