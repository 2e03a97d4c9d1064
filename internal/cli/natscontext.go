package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
)

// natsContext is a context saved by the nats CLI ('nats context save'),
// stored as JSON in $XDG_CONFIG_HOME/nats/context/NAME.json (default
// ~/.config); $XDG_CONFIG_HOME/nats/context.txt names the selected one.
// Only the connection settings raftbus uses are read; the layout is that
// of the nats CLI (NATS ADR-21).
type natsContext struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	Nkey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	UserJWT     string `json:"user_jwt"`
	TLSFirst    bool   `json:"tls_first"`
	NSC         string `json:"nsc"`
}

// natsConfigDir is where the nats CLI keeps its configuration.
func natsConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".config", "nats"), nil
}

// contextPath resolves --context: a path to a .json file, or the name of a
// saved context. With no name it returns the selected context, or "" when
// none is selected.
func contextPath(name string) (string, error) {
	if strings.HasSuffix(name, ".json") && strings.ContainsRune(name, filepath.Separator) {
		return name, nil
	}
	dir, err := natsConfigDir()
	if err != nil {
		if name == "" {
			return "", nil // no home: no selected context either
		}
		return "", fmt.Errorf("--context %s: %w", name, err)
	}
	if name == "" {
		b, err := os.ReadFile(filepath.Join(dir, "context.txt"))
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("selected nats context: %w", err)
		}
		if name = strings.TrimSpace(string(b)); name == "" {
			return "", nil
		}
	}
	// A context name is a file name: nothing that climbs out of the
	// directory.
	if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("nats context name %q is not valid", name)
	}
	return filepath.Join(dir, "context", name+".json"), nil
}

func loadNatsContext(path string) (*natsContext, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats context: %w", err)
	}
	var c natsContext
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("nats context %s: %w", path, err)
	}
	return &c, nil
}

// contextFile turns a context's file reference into a path: a bare path
// (with ~ expanded) or a file:// URI. The other credential URI schemes of
// the nats CLI (nsc://, op://, env://, data:) run programs or carry
// secrets inline and are refused with a clear error.
func contextFile(field, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(v, "file://"); ok {
		v = rest
	} else if strings.Contains(v, "://") || strings.HasPrefix(v, "data:") {
		return "", fmt.Errorf("%s %q: this credential URI scheme is not supported by raftbus; save the credential to a file and name its path", field, v)
	}
	if rest, ok := strings.CutPrefix(v, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("%s %q: %w", field, v, err)
		}
		v = filepath.Join(home, rest)
	}
	return v, nil
}

// applyContext fills the connection settings that neither a flag nor the
// environment gave from the nats context (--context, $NATS_CONTEXT, or
// the selected one), as the nats CLI does. It runs once.
func (f *natsFlags) applyContext() error {
	if f.contextDone {
		return nil
	}
	f.contextDone = true
	if f.context == "" && f.namedContextOnly {
		return nil
	}
	path, err := contextPath(f.context)
	if err != nil || path == "" {
		return usageErr(err)
	}
	c, err := loadNatsContext(path)
	if err != nil {
		return usageErr(err)
	}
	if c.NSC != "" && c.Creds == "" {
		return usageErr(fmt.Errorf("nats context %s uses nsc, which raftbus does not run: set its creds to a credentials file", path))
	}
	if c.UserJWT != "" {
		return usageErr(fmt.Errorf("nats context %s holds an inline user_jwt, which raftbus does not read: use a creds file", path))
	}
	creds, err := contextFile("creds", c.Creds)
	if err != nil {
		return usageErr(fmt.Errorf("nats context %s: %w", path, err))
	}
	nkey, err := contextFile("nkey", c.Nkey)
	if err != nil {
		return usageErr(fmt.Errorf("nats context %s: %w", path, err))
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	// Credentials come as a whole: a user who named any on the command
	// line (or in the environment) gets none from the context.
	if !f.explicitAuth() && f.token == "" {
		fill(&f.user, c.User)
		fill(&f.password, c.Password)
		fill(&f.creds, creds)
		fill(&f.nkey, nkey)
		fill(&f.token, c.Token)
	}
	if f.tlsCert == "" && f.tlsKey == "" {
		fill(&f.tlsCert, c.Cert)
		fill(&f.tlsKey, c.Key)
	}
	fill(&f.tlsCA, c.CA)
	fill(&f.inboxPrefix, c.InboxPrefix)
	f.tlsFirst = f.tlsFirst || c.TLSFirst
	url := c.URL
	if url == "" {
		url = nats.DefaultURL
	}
	fill(&f.server, url)
	return nil
}
