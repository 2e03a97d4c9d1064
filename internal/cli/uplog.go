package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"
)

// upLogFile is the log of 'raftbus up', in its data directory.
const upLogFile = "raftbus.log"

// upLogger is where 'raftbus up' sends the nodes' logs: all of them (at
// --log-level, default info) to the log file, so that its own progress
// lines stay readable, and to stderr only from --log-level if it was given
// (flag or $RAFTBUS_LOG_LEVEL), else from warn.
func upLogger(cmd *cobra.Command, g *globals, path string) (*slog.Logger, func(), error) {
	given := cmd.Flags().Changed("log-level") || fromEnv(cmd, "log-level")
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, nil, usageErr(fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel))
	}
	fileLvl, errLvl := slog.LevelInfo, slog.LevelWarn
	if given {
		fileLvl, errLvl = lvl, lvl
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open the log file: %w", err)
	}
	var file, term slog.Handler
	switch strings.ToLower(g.logFormat) {
	case "text":
		file = slog.NewTextHandler(f, &slog.HandlerOptions{Level: fileLvl})
		term = slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: errLvl})
	case "json":
		file = slog.NewJSONHandler(f, &slog.HandlerOptions{Level: fileLvl})
		term = slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: errLvl})
	default:
		_ = f.Close()
		return nil, nil, usageErr(fmt.Errorf("--log-format %q: use text or json", g.logFormat))
	}
	var once sync.Once
	return slog.New(teeHandler{file, term}), func() { once.Do(func() { _ = f.Close() }) }, nil
}

// teeHandler sends every record to each handler that takes its level.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}

// natsLogger passes the embedded NATS server's log to slog and keeps its
// errors, so that a server that cannot start says why (port in use, store
// not writable) instead of timing out.
type natsLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	err []string
}

func (l *natsLogger) record(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	if len(l.err) < 16 {
		l.err = append(l.err, msg)
	}
	l.mu.Unlock()
	l.log.Error("embedded NATS server: " + msg)
}

// firstError returns the first error the server logged, or "".
func (l *natsLogger) firstError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.err) == 0 {
		return ""
	}
	return l.err[0]
}

func (l *natsLogger) Noticef(f string, a ...any) {
	l.log.Debug("embedded NATS server: " + fmt.Sprintf(f, a...))
}
func (l *natsLogger) Warnf(f string, a ...any) {
	l.log.Warn("embedded NATS server: " + fmt.Sprintf(f, a...))
}
func (l *natsLogger) Fatalf(f string, a ...any) { l.record(f, a...) }
func (l *natsLogger) Errorf(f string, a ...any) { l.record(f, a...) }
func (l *natsLogger) Debugf(string, ...any)     {}
func (l *natsLogger) Tracef(string, ...any)     {}
