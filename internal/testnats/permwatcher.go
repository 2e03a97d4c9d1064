package testnats

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// PermWatcher collects the permission violations the server reports to a
// connection: pass Handler as its nats.ErrorHandler.
type PermWatcher struct {
	mu   sync.Mutex
	errs []string
}

// Handler is a nats.ErrHandler that records permission violations.
func (w *PermWatcher) Handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		w.mu.Lock()
		w.errs = append(w.errs, err.Error())
		w.mu.Unlock()
	}
}

// Refused waits until a violation naming subject arrives.
func (w *PermWatcher) Refused(t testing.TB, subject string) {
	t.Helper()
	Eventually(t, 5*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, e := range w.errs {
			if strings.Contains(e, `"`+subject+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no violation for %s (have %v)", subject, w.errs)
	})
}

// Violations returns the violations recorded so far.
func (w *PermWatcher) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}
