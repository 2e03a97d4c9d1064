package raftstore

import (
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// fatalError is what pebbleLogger.Fatalf panics with. Pebble calls Fatalf
// when it cannot go on, most importantly when a commit's WAL write or fsync
// fails ("pebble: fatal commit error"); if Fatalf returned, Commit would
// report success for a batch that is not durable. So Fatalf must not
// return, and commitBatch turns the panic back into an error on the
// committing goroutine. Pebble's commit pipeline is unusable afterwards,
// which is fine: the store fails (ErrFailed) and writes nothing more.
type fatalError struct {
	msg   string
	cause error // the first error among Fatalf's arguments, if any
}

func (e *fatalError) Error() string {
	if strings.HasPrefix(e.msg, "pebble: ") {
		return "raftstore: " + e.msg
	}
	return "raftstore: pebble: " + e.msg
}
func (e *fatalError) Unwrap() error { return e.cause }

// newFatalError formats a Fatalf call, keeping its error argument so that
// callers can still match the cause (an injected error, ENOSPC, EIO).
func newFatalError(format string, args []any) *fatalError {
	e := &fatalError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.cause = err
			break
		}
	}
	return e
}

// commitBatch commits b, returning Pebble's fatal errors instead of
// panicking. Any other panic is not ours to hide and is re-raised.
func commitBatch(b *pebble.Batch, wo *pebble.WriteOptions) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(*fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	return b.Commit(wo)
}
