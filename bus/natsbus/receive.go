package natsbus

import (
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/internal/inbound"
)

const (
	// idlePoll is how long the delivery goroutine waits for a message
	// before it looks at the slow-consumer counter anyway.
	idlePoll = 100 * time.Millisecond
	// dropPollEvery is how many messages it delivers between looks while
	// busy; a look costs one uncontended lock.
	dropPollEvery = 256
)

// receive is the delivery goroutine: it owns the subscription's message
// channel and the inbound handler, so every Receiver call comes from here.
func (b *Bus) receive(sub *nats.Subscription, h *inbound.Handler) {
	defer b.wg.Done()
	reported := 0 // slow-consumer drops already reported
	sinceLook := 0
	for {
		select {
		case <-b.done:
			// Messages still buffered in the subscription are abandoned.
			return
		default:
		}
		msg, err := sub.NextMsg(idlePoll)
		switch {
		case err == nil:
			h.Frame(msg.Subject, msg.Data)
			if sinceLook++; sinceLook < dropPollEvery {
				continue
			}
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrSlowConsumer):
			// ErrSlowConsumer is nats.go telling us, once, that it dropped
			// messages; the counter below says how many.
		default:
			// The subscription ended: Close unsubscribed, or the owner
			// closed the connection.
			reportSlowConsumer(sub, h, &reported)
			select {
			case <-b.done:
			default:
				b.log.Warn("subscription ended; no more deliveries", "err", err)
			}
			return
		}
		sinceLook = 0
		reportSlowConsumer(sub, h, &reported)
	}
}

// reportSlowConsumer reports the messages nats.go dropped for exceeding the
// pending limits since the last report.
func reportSlowConsumer(sub *nats.Subscription, h *inbound.Handler, reported *int) {
	n, err := sub.Dropped()
	if err != nil || n <= *reported {
		return
	}
	h.Dropped(uuid.Nil, bus.DropSlowConsumer, n-*reported, sub.Subject)
	*reported = n
}
