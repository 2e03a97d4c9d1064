package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// globals holds the flags every subcommand shares.
type globals struct {
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

// logger builds the slog logger the log flags describe; logs go to stderr.
func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageErr(fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel))
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, usageErr(fmt.Errorf("--log-format %q: use text or json", g.logFormat))
}

// newRoot builds the command tree.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "raftbus",
		Short: "etcd Raft over NATS, addressed by incarnation",
		Long: `raftbus carries etcd Raft traffic over NATS. Every node incarnation has its own
subjects, so a process that reuses a removed node's host:port can never receive
the old node's traffic.

Start a local three-node cluster on an embedded NATS server:
  raftbus up

Flags whose help ends in ($VAR) read $VAR when not given. Exit codes: 0 ok,
1 failed, 2 bad arguments, 3 unreachable, 4 precondition, 5 no such member,
6 last voter, 7 conflict, 8 permission denied, 9 timeout, 10 node removed,
130 interrupted ('endpoint health': 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("RAFTBUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error ($RAFTBUS_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("RAFTBUS_LOG_FORMAT", "text"), "log format: text or json ($RAFTBUS_LOG_FORMAT)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return applyEnv(cmd) }
	root.Version = versionLine(readVersion())
	root.SetVersionTemplate(`{{.Version}}` + "\n")
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	strictGroups(root)
	return root
}

// strictGroups makes every command that only groups subcommands (member,
// endpoint, ...) refuse an unknown subcommand with ExitUsage, as the root
// does, instead of printing its help and exiting 0; without arguments it
// prints its help.
func strictGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		strictGroups(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() || cmd == cmd.Root() {
		return
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErr(fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath()))
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
}

// commands are the subcommand constructors; each file registers its own.
var commands []func(*globals) *cobra.Command

// Main runs the raftbus command with args and returns the process exit
// code. Errors are printed to stderr as "Error: ...".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	// Cobra reports an unknown command (and a missing argument of the root)
	// as a plain error; it is a usage error like an unknown flag.
	if err != nil && codeOf(err) == ExitError && strings.HasPrefix(err.Error(), "unknown command ") {
		err = usageErr(err)
	}
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	return codeOf(err)
}

// exactArgs wraps cobra.ExactArgs so a wrong count exits with ExitUsage.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return usageErr(cobra.ExactArgs(n)(cmd, args))
	}
}
