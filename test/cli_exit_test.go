package test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/raftbus/raftbus/internal/cli"
)

// The exit codes and manners of the real binary, through os.Exit: usage
// errors are 2 whether the command or the flag is unknown, an invalid
// environment value is an error, --help shows no secret from the
// environment, and --version works.
func TestCLIExitCodesBinary(t *testing.T) {
	bin := raftbusBinary(t)
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	cases := []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{nil, []string{"bogus"}, cli.ExitUsage, "unknown command"},
		{nil, []string{"--bogus"}, cli.ExitUsage, "unknown flag"},
		{nil, []string{"member", "bogus"}, cli.ExitUsage, "unknown command"},
		{[]string{"NATS_TIMEOUT=banana"}, []string{"member", "list", "-s", "nats://127.0.0.1:1"}, cli.ExitUsage, "$NATS_TIMEOUT"},
		{nil, []string{"endpoint", "health", "-s", "nats://127.0.0.1:1", "--timeout", "200ms", "--cluster", "01a2359c-8b8e-77bf-b82a-aa726563e529"}, cli.HealthUnknown, "connect"},
		{nil, []string{"--version"}, 0, "protocol: raft envelope v"},
		{nil, []string{"version", "-w", "json"}, 0, `"envelope_version_max"`},
	}
	for _, c := range cases {
		out, code := run(c.env, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("raftbus %s: exit %d (want %d), output:\n%s", strings.Join(c.args, " "), code, c.code, out)
		}
	}
	out, code := run([]string{"NATS_PASSWORD=x-very-secret", "NATS_TOKEN=y-very-secret"}, "node", "--help")
	if code != 0 || strings.Contains(out, "very-secret") {
		t.Errorf("node --help: exit %d, printed a secret:\n%s", code, out)
	}
}
