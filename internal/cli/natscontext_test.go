package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/internal/testnats"
)

// saveContext writes a nats CLI context into the (temporary) config dir.
func saveContext(t *testing.T, cfg, name string, c map[string]any) string {
	t.Helper()
	dir := filepath.Join(cfg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c)
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The nats CLI's saved contexts are read as the nats CLI reads them: by
// --context, $NATS_CONTEXT or the selected one in context.txt, under flags
// and environment variables. An answerless status query (exit 3, "no node
// answered") proves the connection was made and authorised.
func TestNatsContext(t *testing.T) {
	cfg := isolateEnv(t)
	opts := testnats.Options(t)
	opts.Users = []*natsserver.User{
		{Username: "ops", Password: "pw"},
		// boxed may subscribe only below its own inbox prefix.
		{Username: "boxed", Password: "pw", Permissions: &natsserver.Permissions{
			Subscribe: &natsserver.SubjectPermission{Allow: []string{"_BOXED.>"}}}},
	}
	ns := testnats.Run(t, opts)
	tokOpts := testnats.Options(t)
	tokOpts.Authorization = "t0ken"
	tok := testnats.Run(t, tokOpts)

	saveContext(t, cfg, "prod", map[string]any{"url": ns.ClientURL(), "user": "ops", "password": "pw"})
	saveContext(t, cfg, "tok", map[string]any{"url": tok.ClientURL(), "token": "t0ken"})
	saveContext(t, cfg, "boxed", map[string]any{"url": ns.ClientURL(), "user": "boxed", "password": "pw", "inbox_prefix": "_BOXED"})
	saveContext(t, cfg, "unboxed", map[string]any{"url": ns.ClientURL(), "user": "boxed", "password": "pw"})
	saveContext(t, cfg, "vault", map[string]any{"url": ns.ClientURL(), "creds": "op://vault/item/creds"})
	file := saveContext(t, cfg, "byfile", map[string]any{"url": ns.ClientURL(), "user": "ops", "password": "pw"})

	query := func(more ...string) []string {
		return append([]string{"endpoint", "status", "--cluster", uuid.NewString(), "--wait", "100ms", "--timeout", "2s"}, more...)
	}
	check := func(name string, env map[string]string, args []string, code int, want string) {
		t.Run(name, func(t *testing.T) {
			for k, v := range env {
				t.Setenv(k, v)
			}
			_, errOut, got := runCLI(t, args...)
			if got != code || !strings.Contains(errOut, want) {
				t.Fatalf("raftbus %s: exit %d (want %d), stderr %q (want %q)", strings.Join(args, " "), got, code, errOut, want)
			}
		})
	}
	check("no context selected", nil, query(), ExitUsage, "no NATS server")
	check("--context", nil, query("--context", "prod"), ExitUnreachable, "no node")
	check("$NATS_CONTEXT", map[string]string{"NATS_CONTEXT": "prod"}, query(), ExitUnreachable, "no node")
	check("a context file by path", nil, query("--context", file), ExitUnreachable, "no node")
	check("token", nil, query("--context", "tok"), ExitUnreachable, "no node")
	check("inbox prefix", nil, query("--context", "boxed"), ExitUnreachable, "no node")
	check("without its inbox prefix", nil, query("--context", "unboxed"), ExitPermission, "denied")
	check("a flag wins over the context", nil, query("--context", "prod", "--password", "wrong"), ExitPermission, "refused")
	check("credentials on the command line replace the context's", nil, query("--context", "tok", "--user", "ops", "--password", "pw", "-s", ns.ClientURL()), ExitUnreachable, "no node")
	check("unknown context", nil, query("--context", "nope"), ExitUsage, "nope.json")
	check("a name that climbs out", nil, query("--context", "../prod"), ExitUsage, "not valid")
	check("credential URI schemes are refused", nil, query("--context", "vault"), ExitUsage, "not supported")

	if err := os.WriteFile(filepath.Join(cfg, "nats", "context.txt"), []byte("prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("the selected context", nil, query(), ExitUnreachable, "no node")
	check("--context wins over the selected one", nil, query("--context", "tok"), ExitUnreachable, "no node")
	// A node takes a context only when it is named: the selected one is an
	// operator's, and must not replace the node's own key.
	check("a node ignores the selected context", nil, []string{"node", "--bootstrap", "--name", "n1", "--data", filepath.Join(t.TempDir(), "n1")}, ExitUsage, "no NATS server")
	check("HOME without XDG_CONFIG_HOME", map[string]string{"XDG_CONFIG_HOME": "", "HOME": t.TempDir()}, query(), ExitUsage, "no NATS server")
}
