package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/raftbus/raftbus/datadir"
)

// nodeInboxPrefix is a node's default inbox prefix: per incarnation, so
// that its user may subscribe to its own replies only.
func nodeInboxPrefix(inc uuid.UUID) string { return "_INBOX." + inc.String() }

// explicitAuth reports whether the flags name credentials; they win over
// the data directory's key.
func (f *natsFlags) explicitAuth() bool {
	return f.user != "" || f.creds != "" || f.nkey != "" || f.token != ""
}

// connectNode opens a node's NATS connection: the node's inbox prefix
// (--inbox-prefix, default _INBOX.<incarnation>), and unless the flags name
// credentials, authentication with the data directory's nkey (or --jwt
// signed by it). A server that asks for no authentication sends no nonce;
// the node then connects without the key, so an open server keeps working.
func connectNode(f *natsFlags, name, dir string, id *datadir.Identity, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if err := f.applyContext(); err != nil {
		return nil, err
	}
	inbox := f.inboxPrefix
	if inbox == "" {
		inbox = nodeInboxPrefix(id.Incarnation)
	}
	base := append([]nats.Option{nats.CustomInboxPrefix(inbox), permissionLogger(log)}, extra...)
	if f.explicitAuth() {
		return f.connect(name, base...)
	}
	auth, err := nodeKeyOption(f, dir)
	if err != nil {
		return nil, err
	}
	nc, err := f.connect(name, append(base, auth)...)
	if err != nil && errors.Is(err, nats.ErrNkeysNotSupported) {
		log.Warn("the NATS server asks for no authentication: connecting without this node's key (see SECURITY.md)")
		return f.connect(name, base...)
	}
	return nc, err
}

// nodeKeyOption authenticates with the data directory's key: as an nkey
// user, or with --jwt (operator mode) signed by the same key.
func nodeKeyOption(f *natsFlags, dir string) (nats.Option, error) {
	id, err := datadir.EnsureKey(dir)
	if err != nil {
		return nil, err
	}
	kp, err := datadir.LoadKey(dir)
	if err != nil {
		return nil, err
	}
	sign := func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }
	if f.jwt != "" {
		path := f.jwt
		return nats.UserJWT(func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("--jwt %s: %w", path, err)
			}
			return strings.TrimSpace(string(b)), nil
		}, sign), nil
	}
	return nats.Nkey(id.PublicKey, sign), nil
}

// permissionLogger logs asynchronous NATS errors; a permission violation
// means the server's permissions and this build disagree.
func permissionLogger(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		if errors.Is(err, nats.ErrPermissionViolation) {
			log.Error("NATS denied a publish or subscribe: the server's permissions for this node do not match (regenerate them with 'raftbus nats-config')", "err", err, "subscription", subj)
			return
		}
		log.Warn("NATS asynchronous error", "err", err, "subscription", subj)
	})
}

// registerNodeAuth adds the flags only a node has.
func (f *natsFlags) registerNodeAuth(fs *pflag.FlagSet) {
	fs.StringVar(&f.jwt, "jwt", envOr("RAFTBUS_JWT", ""), "user JWT file for operator mode, signed with the data directory's key ($RAFTBUS_JWT)")
}
