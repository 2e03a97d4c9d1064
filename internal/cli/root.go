// Package cli implements the raftbus command. It is a library so that tests
// can run commands in-process; cmd/raftbus only calls Main.
package cli

import (
	"context"
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
  raftbus up`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("RAFTBUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error ($RAFTBUS_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("RAFTBUS_LOG_FORMAT", "text"), "log format: text or json ($RAFTBUS_LOG_FORMAT)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands are the subcommand constructors; each file registers its own.
var commands []func(*globals) *cobra.Command

// Main runs the raftbus command with args and returns the process exit
// code. Errors are printed to stderr as "Error: ...".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
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
