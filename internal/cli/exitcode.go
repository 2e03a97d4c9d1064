package cli

import (
	"context"
	"errors"
)

// Exit codes of the raftbus command, the same for every subcommand.
const (
	ExitOK           = 0   // success
	ExitError        = 1   // the operation failed
	ExitUsage        = 2   // bad flags or arguments
	ExitUnreachable  = 3   // cannot connect to NATS or reach the cluster
	ExitPrecondition = 4   // a precondition failed: identity mismatch, node not announced, member exists
	ExitNoSuchMember = 5   // the member named does not exist
	ExitLastVoter    = 6   // the change would remove the last voter
	ExitConflict     = 7   // a concurrent membership change came first
	ExitPermission   = 8   // NATS refused the credentials, or denied a publish or subscribe
	ExitTimeout      = 9   // the operation did not finish within --timeout
	ExitRemoved      = 10  // this node (or incarnation) was removed from the cluster: wipe its data directory
	ExitInterrupted  = 130 // interrupted by a signal
)

// The exit codes of 'raftbus endpoint health' follow the Nagios plugin
// convention instead, so that monitoring systems read them directly.
const (
	HealthOK       = 0 // every node answered, one leader, all caught up
	HealthWarning  = 1 // degraded but serving: a member unreachable (quorum at risk), lagging, or reporting a problem
	HealthCritical = 2 // no node answered, no leader, quorum lost, two leaders at one term
	HealthUnknown  = 3 // the check itself failed: bad arguments, NATS unreachable, permission denied
)

// errSilent carries an exit code whose explanation the command has
// printed already (the verdict of 'endpoint health'); Main prints nothing
// more.
var errSilent = errors.New("see the output above")

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErr(err error) error { return withCode(ExitUsage, err) }

// codeOf maps an error to the exit code it stands for.
func codeOf(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	}
	return ExitError
}
