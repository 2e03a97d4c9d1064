package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/node"
)

// authServer runs a NATS server with two users: "admin" may do anything,
// "mute" may publish nothing.
func authServer(t *testing.T) *natsserver.Server {
	t.Helper()
	opts := testnats.Options(t)
	opts.Users = []*natsserver.User{
		{Username: "admin", Password: "s3cret"},
		{Username: "mute", Password: "s3cret", Permissions: &natsserver.Permissions{
			Publish: &natsserver.SubjectPermission{Deny: []string{">"}}}},
	}
	return testnats.Run(t, opts)
}

// isolateEnv clears the variables the CLI reads and points the nats CLI's
// configuration at an empty directory, so that neither the developer's
// shell nor their saved nats contexts leak into a test.
func isolateEnv(t *testing.T) string {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "RAFTBUS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	return cfg
}

// Every class of error exits with the code the README documents.
func TestExitCodes(t *testing.T) {
	isolateEnv(t)
	ns := authServer(t)
	url := ns.ClientURL()
	closed := fmt.Sprintf("nats://127.0.0.1:%d", testnats.FreePort(t))
	cluster := uuid.NewString()
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	status := func(more ...string) []string {
		return append([]string{"endpoint", "status", "--cluster", cluster, "--wait", "200ms", "--timeout", "2s"}, more...)
	}
	health := func(more ...string) []string {
		return append([]string{"endpoint", "health", "--cluster", cluster, "--wait", "200ms", "--timeout", "2s"}, more...)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string // in stderr
	}{
		{"unknown command", nil, []string{"bogus"}, ExitUsage, `unknown command "bogus"`},
		{"unknown subcommand", nil, []string{"member", "bogus"}, ExitUsage, `unknown command "bogus" for "raftbus member"`},
		{"unknown flag", nil, []string{"--bogus"}, ExitUsage, "unknown flag"},
		{"unknown flag of a subcommand", nil, status("--bogus"), ExitUsage, "unknown flag"},
		{"bad argument count", nil, []string{"version", "x"}, ExitUsage, "arg"},
		{"invalid environment value", map[string]string{"NATS_TIMEOUT": "banana"}, []string{"endpoint", "status", "-s", url}, ExitUsage, "$NATS_TIMEOUT"},
		{"invalid log level in the environment", map[string]string{"RAFTBUS_LOG_LEVEL": "loud"}, []string{"up", "--data", file}, ExitUsage, ""},
		{"missing CA file", nil, status("-s", url, "--tlsca", filepath.Join(dir, "none.pem")), ExitUsage, "--tlsca"},
		{"missing creds file", nil, status("-s", url, "--creds", filepath.Join(dir, "none.creds")), ExitUsage, "--creds"},
		{"no server", nil, status(), ExitUsage, "no NATS server"},
		{"bad cluster ID", nil, []string{"endpoint", "status", "-s", url, "--cluster", "nope"}, ExitUsage, "not a UUID"},
		{"NATS unreachable", nil, status("-s", closed), ExitUnreachable, "connect to NATS"},
		{"credentials refused", nil, status("-s", url, "--user", "admin", "--password", "wrong"), ExitPermission, "refused these credentials"},
		{"publish denied", nil, status("-s", url, "--user", "mute", "--password", "s3cret"), ExitPermission, "denied"},
		{"no node answers", nil, status("-s", url, "--user", "admin", "--password", "s3cret"), ExitUnreachable, "no node"},
		{"new directory without --bootstrap", nil, []string{"node", "--data", filepath.Join(dir, "new"), "-s", url, "--user", "admin", "--password", "s3cret"}, ExitPrecondition, "--bootstrap"},
		{"--join with the cluster from the environment", map[string]string{"RAFTBUS_CLUSTER": cluster},
			[]string{"node", "--join", "--name", "n2", "--data", filepath.Join(dir, "joiner"), "-s", url}, ExitUsage, "--cluster on the command line"},
		{"node init with the cluster from the environment", map[string]string{"RAFTBUS_CLUSTER": cluster},
			[]string{"node", "init", "--name", "n2", "--data", filepath.Join(dir, "joiner")}, ExitUsage, "--cluster on the command line"},
		{"up below a file", nil, []string{"up", "--data", filepath.Join(file, "sub")}, ExitError, "not a directory"},
		{"up on a file", nil, []string{"up", "--data", file}, ExitUsage, "is a file"},
		{"health: nobody answers is critical", nil, health("-s", url, "--user", "admin", "--password", "s3cret"), HealthCritical, ""},
		{"health: NATS unreachable is unknown", nil, health("-s", closed), HealthUnknown, "connect"},
		{"health: credentials refused is unknown", nil, health("-s", url, "--user", "admin", "--password", "wrong"), HealthUnknown, "refused these credentials"},
		{"health: bad flag is unknown", nil, health("--bogus"), HealthUnknown, "unknown flag"},
		{"version", nil, []string{"version"}, ExitOK, ""},
		{"--version", nil, []string{"--version"}, ExitOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			out, errOut, code := runCLI(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Fatalf("raftbus %s: exit %d (want %d), stderr %q (want %q), stdout %q", strings.Join(c.args, " "), code, c.code, errOut, c.want, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "joiner")); err == nil {
		t.Fatal("the refused --join created a data directory")
	}
}

// Secrets from the environment never appear in --help, and an error
// about an invalid value does not echo a password.
func TestHelpPrintsNoSecrets(t *testing.T) {
	isolateEnv(t)
	t.Setenv("NATS_PASSWORD", "hunter2-secret")
	t.Setenv("RAFTBUS_ADMIN_PASSWORD", "hunter3-secret")
	t.Setenv("NATS_TOKEN", "hunter4-secret")
	for _, args := range [][]string{{"node", "--help"}, {"member", "list", "--help"}, {"endpoint", "status", "--help"}, {"nats-config", "--help"}, {"node", "init", "--help"}} {
		out, errOut, code := runCLI(t, args...)
		if code != 0 || strings.Contains(out+errOut, "hunter") {
			t.Fatalf("raftbus %v: exit %d, printed a secret:\n%s%s", args, code, out, errOut)
		}
		if args[0] == "node" && len(args) == 2 && !strings.Contains(out, "($NATS_PASSWORD)") {
			t.Fatalf("the help no longer names the variable:\n%s", out)
		}
	}
}

// The environment still applies, below the command line.
func TestEnvironmentAppliesBelowFlags(t *testing.T) {
	isolateEnv(t)
	ns := authServer(t)
	t.Setenv("NATS_URL", ns.ClientURL())
	t.Setenv("NATS_USER", "admin")
	t.Setenv("NATS_PASSWORD", "s3cret")
	args := []string{"endpoint", "status", "--cluster", uuid.NewString(), "--wait", "100ms"}
	if _, errOut, code := runCLI(t, args...); code != ExitUnreachable || !strings.Contains(errOut, "no node") {
		t.Fatalf("with the environment: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runCLI(t, append(args, "--password", "wrong")...); code != ExitPermission {
		t.Fatalf("a flag must win over the environment: exit %d: %s", code, errOut)
	}
}

// A node that stops because it was removed exits with ExitRemoved, any
// other stop with ExitError.
func TestStoppedNodeExitCodes(t *testing.T) {
	id := &datadir.Identity{ClusterID: uuid.New(), RaftID: 2, Incarnation: uuid.New()}
	if err := stoppedErr(fmt.Errorf("apply: %w", node.ErrRemoved), id, "/d"); codeOf(err) != ExitRemoved || !strings.Contains(err.Error(), "wipe /d") {
		t.Fatalf("removed: %v, code %d", err, codeOf(err))
	}
	if err := stoppedErr(errors.New("disk on fire"), id, "/d"); codeOf(err) != ExitError {
		t.Fatalf("other stop: %v, code %d", err, codeOf(err))
	}
}
