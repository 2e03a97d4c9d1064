// Command raftbus runs raftbus nodes, a local demo cluster on an embedded
// NATS server, and the membership commands. See `raftbus --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/raftbus/raftbus/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
