package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
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
	// jwt is a node's --jwt: a user JWT signed with the data directory's
	// key (operator mode).
	jwt string
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
	fs.DurationVar(&f.timeout, "timeout", envDuration("NATS_TIMEOUT", 5*time.Second), "time to wait for NATS and for operations ($NATS_TIMEOUT)")
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(key); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
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
	return nil
}

// options builds the nats.go options the flags describe. name becomes the
// connection name shown by the server's monitoring.
func (f *natsFlags) options(name string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(f.timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
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
	if f.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.inboxPrefix))
	}
	if f.tlsCert != "" {
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	return opts, nil
}

// connect opens the NATS connection; failures carry ExitUnreachable.
func (f *natsFlags) connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	if err := f.validate(); err != nil {
		return nil, usageErr(err)
	}
	opts, err := f.options(name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.server, append(opts, extra...)...)
	if err != nil {
		return nil, withCode(ExitUnreachable, fmt.Errorf("connect to NATS at %s: %w", f.server, err))
	}
	return nc, nil
}
