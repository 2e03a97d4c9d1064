package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/raftbus/raftbus/bus/natsbus"
)

// natsFlags are the NATS connection flags, named as in the nats CLI and
// read from the same environment variables when the flag is not given.
type natsFlags struct {
	server   string
	user     string
	password string
	creds    string
	nkey     string
	tlsCert  string
	tlsKey   string
	tlsCA    string
	timeout  time.Duration
	// inboxPrefix is --inbox-prefix: the prefix of this connection's reply
	// subjects (nodes default to _INBOX.<incarnation>, the CLI to _INBOX).
	inboxPrefix string
	// token is --token, or a context's token.
	token string
	// tlsFirst is a context's tls_first: TLS before the server's INFO.
	tlsFirst bool
	// context is --context: the nats CLI context the connection settings
	// default to (see natscontext.go).
	context string
	// namedContextOnly ignores the nats CLI's selected context: a node
	// must not silently take an operator's interactive credentials (the
	// selected context often holds an admin's) instead of its own key.
	// An explicit --context or $NATS_CONTEXT still applies.
	namedContextOnly bool
	// contextDone says the context was applied (or must not be: the
	// embedded server of 'raftbus up').
	contextDone bool
	// jwt is a node's --jwt: a user JWT signed with the data directory's
	// key (operator mode).
	jwt string
	// pingInterval and writeDeadline decide how fast a stalled server is
	// detected (natsbus.ConnTuning).
	pingInterval  time.Duration
	writeDeadline time.Duration
}

func (f *natsFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.server, "server", "s", envOr("NATS_URL", ""), "NATS server URLs, comma separated ($NATS_URL)")
	fs.StringVar(&f.user, "user", envOr("NATS_USER", ""), "NATS user name ($NATS_USER)")
	fs.StringVar(&f.password, "password", envOr("NATS_PASSWORD", ""), "NATS password ($NATS_PASSWORD)")
	fs.StringVar(&f.creds, "creds", envOr("NATS_CREDS", ""), "NATS user credentials file ($NATS_CREDS)")
	fs.StringVar(&f.nkey, "nkey", envOr("NATS_NKEY", ""), "NATS NKey seed file ($NATS_NKEY)")
	fs.StringVar(&f.tlsCert, "tlscert", envOr("NATS_CERT", ""), "TLS client certificate file ($NATS_CERT)")
	fs.StringVar(&f.tlsKey, "tlskey", envOr("NATS_KEY", ""), "TLS client private key file ($NATS_KEY)")
	fs.StringVar(&f.tlsCA, "tlsca", envOr("NATS_CA", ""), "TLS certificate authority file ($NATS_CA)")
	fs.StringVar(&f.inboxPrefix, "inbox-prefix", envOr("NATS_INBOX_PREFIX", ""), "prefix of reply subjects (default _INBOX, or _INBOX.<incarnation> for a node) ($NATS_INBOX_PREFIX)")
	fs.StringVar(&f.token, "token", "", "NATS authentication token ($NATS_TOKEN)")
	fs.StringVar(&f.context, "context", "", "nats CLI context to read the connection from: a name saved by 'nats context save', or a .json file; default the selected one ($NATS_CONTEXT)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "time to wait for NATS and for operations ($NATS_TIMEOUT)")
	fs.DurationVar(&f.pingInterval, "ping-interval", natsbus.DefaultPingInterval,
		"how often the connection pings its NATS server; after 2 unanswered pings it moves to another server of the cluster")
	fs.DurationVar(&f.writeDeadline, "write-deadline", natsbus.DefaultWriteDeadline,
		"longest one write to the NATS server may take before the connection moves to another server")
}

func (f *natsFlags) validate() error {
	if f.server == "" {
		return errors.New("no NATS server given: use -s/--server or set NATS_URL")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tlscert and --tlskey must be given together")
	}
	if f.creds != "" && f.nkey != "" {
		return errors.New("--creds and --nkey cannot be used together")
	}
	if f.jwt != "" && (f.creds != "" || f.nkey != "" || f.user != "") {
		return errors.New("--jwt cannot be used with --creds, --nkey or --user")
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %v", f.timeout)
	}
	if f.pingInterval < 0 || f.writeDeadline < 0 {
		// Zero (a caller that registered no flags) is natsbus's default.
		return fmt.Errorf("--ping-interval and --write-deadline must be positive, got %v and %v", f.pingInterval, f.writeDeadline)
	}
	if f.token != "" && (f.user != "" || f.creds != "" || f.nkey != "") {
		return errors.New("a token cannot be used with --user, --creds or --nkey")
	}
	// A missing or unreadable file is a mistake on the command line; found
	// here it is reported as such, not as an unreachable server.
	for _, file := range []struct{ flag, path string }{
		{"--creds", f.creds}, {"--nkey", f.nkey}, {"--tlscert", f.tlsCert}, {"--tlskey", f.tlsKey}, {"--tlsca", f.tlsCA}, {"--jwt", f.jwt},
	} {
		if file.path == "" {
			continue
		}
		st, err := os.Stat(file.path)
		if err != nil {
			return fmt.Errorf("%s: %w", file.flag, err)
		}
		if st.IsDir() {
			return fmt.Errorf("%s %s is a directory, not a file", file.flag, file.path)
		}
	}
	return nil
}

// options builds the nats.go options the flags describe. name becomes the
// connection name shown by the server's monitoring.
func (f *natsFlags) options(name string) ([]nats.Option, error) {
	// A stalled server is left within seconds (natsbus.ConnTuning), not
	// after nats.go's 2-minute ping interval and 1-minute write deadline.
	opts := append(natsbus.ConnTuning{PingInterval: f.pingInterval, WriteDeadline: f.writeDeadline, DialTimeout: f.timeout}.Options(),
		nats.Name(name),
		nats.Timeout(f.timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
	)
	if f.user != "" {
		opts = append(opts, nats.UserInfo(f.user, f.password))
	}
	if f.creds != "" {
		opts = append(opts, nats.UserCredentials(f.creds))
	}
	if f.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(f.nkey)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--nkey %s: %w", f.nkey, err))
		}
		opts = append(opts, o)
	}
	if f.token != "" {
		opts = append(opts, nats.Token(f.token))
	}
	if f.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.inboxPrefix))
	}
	if f.tlsFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if f.tlsCert != "" {
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	return opts, nil
}

// connect opens the NATS connection. A server that refuses the
// credentials exits with ExitPermission, any other failure with
// ExitUnreachable.
// connectNotingDenials connects like connect and sets denied when the
// server refuses a publish or subscribe (reported asynchronously), so a
// command can exit with ExitPermission instead of a bare timeout.
func (f *natsFlags) connectNotingDenials(name string, denied *atomic.Bool) (*nats.Conn, error) {
	return f.connect(name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			denied.Store(true)
		}
	}))
}

func (f *natsFlags) connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	if err := f.applyContext(); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, usageErr(err)
	}
	opts, err := f.options(name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.server, append(opts, extra...)...)
	if err != nil {
		return nil, classifyConnect(f.server, err)
	}
	return nc, nil
}

// classifyConnect gives a failed connection its exit code.
func classifyConnect(server string, err error) error {
	err = fmt.Errorf("connect to NATS at %s: %w", server, err)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		errors.Is(err, nats.ErrAccountAuthExpired), errors.Is(err, nats.ErrPermissionViolation):
		return withCode(ExitPermission, fmt.Errorf("%w (the server refused these credentials)", err))
	}
	return withCode(ExitUnreachable, err)
}
