package natsbus_test

import (
	"log/slog"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/bus/natsbus"
)

// New wires a bus to an existing connection; the connection's reconnect
// options decide how the bus rides out server restarts.
func ExampleNew() {
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		return
	}
	defer nc.Close() // the bus does not own nc

	b, err := natsbus.New(natsbus.Config{
		Conn:       nc,
		Cluster:    uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-4a5b6c7d8e9f"),
		Self:       uuid.Must(uuid.NewV7()),
		Logger:     slog.Default(),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		return
	}
	defer b.Close()

	if err := b.Start(logReceiver{}); err != nil {
		return
	}
	_ = b.Send(uuid.MustParse("0190f3c4-5a1b-7c2d-8e3f-000000000002"), bus.KindMsg, []byte("payload"))
}

// logReceiver stands in for the raft bridge.
type logReceiver struct{}

func (logReceiver) Deliver(d bus.Delivery) {
	slog.Info("payload", "from", d.From, "kind", string(d.Kind), "bytes", len(d.Data))
}

func (logReceiver) Dropped(from uuid.UUID, reason bus.DropReason, n int) {
	slog.Warn("dropped", "from", from, "reason", string(reason), "count", n)
}
