package cli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/membership"
	"github.com/raftbus/raftbus/raftbridge"
)

func init() { commands = append(commands, newVersionCmd) }

// keyDependencies are the modules whose versions decide compatibility
// and behaviour; 'raftbus version' names them.
var keyDependencies = []string{
	"go.etcd.io/raft/v3",
	"github.com/nats-io/nats.go",
	"github.com/nats-io/nats-server/v2",
	"github.com/cockroachdb/pebble/v2",
}

// versionInfo is what 'raftbus version' reports.
type versionInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	// RevisionTime is the commit time of Revision (RFC 3339).
	RevisionTime string `json:"revision_time,omitempty"`
	// Modified says the binary was built from a tree with local changes.
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	// EnvelopeMin and EnvelopeMax are the Raft envelope versions this
	// build accepts; it writes EnvelopeMax.
	EnvelopeMin int `json:"envelope_version_min"`
	EnvelopeMax int `json:"envelope_version_max"`
	// MembershipFormat is the version of the membership records it writes.
	MembershipFormat int               `json:"membership_format"`
	Dependencies     map[string]string `json:"dependencies,omitempty"`
}

// readVersion reads the module version and VCS stamp that the Go
// toolchain embedded in the binary. A binary built by 'go build' in a
// checkout reports "(devel)" plus the commit; 'go install ...@vX' reports vX.
func readVersion() versionInfo {
	v := versionInfo{Version: "(unknown)", EnvelopeMin: raftbridge.MinVersion, EnvelopeMax: raftbridge.MaxVersion,
		MembershipFormat: membership.FormatVersion}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Go = bi.GoVersion
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.RevisionTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		for _, k := range keyDependencies {
			if d.Path == k {
				if v.Dependencies == nil {
					v.Dependencies = map[string]string{}
				}
				ver := d.Version
				if d.Replace != nil {
					ver += " => " + d.Replace.Path + " " + d.Replace.Version
				}
				v.Dependencies[k] = ver
			}
		}
	}
	return v
}

// versionLine renders v for people; --version prints it too.
func versionLine(v versionInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "raftbus %s", v.Version)
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(&b, " (commit %s", rev)
		if v.Modified {
			b.WriteString(", modified")
		}
		if v.RevisionTime != "" {
			fmt.Fprintf(&b, ", %s", v.RevisionTime)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, "\nprotocol: raft envelope v%d", v.EnvelopeMin)
	if v.EnvelopeMax != v.EnvelopeMin {
		fmt.Fprintf(&b, "-v%d", v.EnvelopeMax)
	}
	fmt.Fprintf(&b, ", membership records v%d", v.MembershipFormat)
	fmt.Fprintf(&b, "\ngo: %s", v.Go)
	for _, k := range keyDependencies {
		if ver, ok := v.Dependencies[k]; ok {
			fmt.Fprintf(&b, "\n%s %s", k, ver)
		}
	}
	return b.String()
}

func newVersionCmd(g *globals) *cobra.Command {
	var writeOut string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, protocol versions and key dependencies",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			v := readVersion()
			switch writeOut {
			case "json":
				return writeJSON(g.stdout, v)
			case "table":
				_, err := fmt.Fprintln(g.stdout, versionLine(v))
				return err
			}
			return usageErr(fmt.Errorf("--write-out %q: use table or json", writeOut))
		},
	}
	cmd.Flags().StringVarP(&writeOut, "write-out", "w", "table", "output format: table or json")
	return cmd
}
