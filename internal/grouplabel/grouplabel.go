// Package grouplabel labels a Raft group's metrics: every per-group series
// of a process that runs many groups carries group="<decimal group ID>",
// the same in the node, the transport and the storage.
package grouplabel

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Wrap returns reg with the group label added to everything registered
// through it; nil stays nil (no metrics).
func Wrap(reg prometheus.Registerer, group uint64) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return prometheus.WrapRegistererWith(prometheus.Labels{"group": strconv.FormatUint(group, 10)}, reg)
}
