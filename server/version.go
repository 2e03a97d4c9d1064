package server

import (
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildVersion is the module version and VCS revision the Go toolchain
// embedded in the binary: "(devel)" and a commit for a build in a checkout,
// vX.Y.Z for 'go install ...@vX.Y.Z', "(unknown)" without build info.
type BuildVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Go       string `json:"go,omitempty"`
}

var (
	buildOnce sync.Once
	build     BuildVersion
)

// Build returns the binary's BuildVersion (read once).
func Build() BuildVersion {
	buildOnce.Do(func() {
		build = BuildVersion{Version: "(unknown)"}
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		build.Go = bi.GoVersion
		if bi.Main.Version != "" {
			build.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				build.Revision = s.Value
			}
		}
	})
	return build
}

// buildInfoCollector is raftbus_build_info: always 1, with the version as
// labels, so that dashboards can show and join on what every node runs.
func buildInfoCollector() prometheus.Collector {
	b := Build()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "raftbus", Name: "build_info",
		Help:        "Always 1; the labels say which raftbus build the node runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.Go},
	})
	g.Set(1)
	return g
}
