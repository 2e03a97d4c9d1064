package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/raftbridge"
)

type nodeInitFlags struct {
	data      string
	name      string
	bootstrap bool
	cluster   string
	writeOut  string
}

func newNodeInitCmd(g *globals) *cobra.Command {
	f := &nodeInitFlags{}
	cmd := &cobra.Command{
		Use:   "init --data DIR --name NAME (--bootstrap | --cluster ID)",
		Short: "Create a node's identity and key without starting it",
		Long: `Create the data directory's identity: a new incarnation and its NATS nkey, and
print the incarnation and the public key. Nothing is started and NATS is not
contacted, so the NATS permissions ('raftbus nats-config --data DIR') can be
installed before the node first connects.

--bootstrap makes this node Raft ID 1 of a new cluster; --cluster ID prepares
a node that joins that cluster ('raftbus node --join' announces it, then
'raftbus member add NAME' admits it). 'raftbus node --data DIR' starts it.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// As for 'node --join': the cluster a new incarnation joins is
			// named on the command line, never taken from the environment.
			if fromEnv(cmd, "cluster") {
				if !f.bootstrap {
					return usageErr(fmt.Errorf("node init needs --cluster on the command line; $RAFTBUS_CLUSTER (%s) is not used to make a joining identity: pass --cluster $RAFTBUS_CLUSTER to mean it", f.cluster))
				}
				f.cluster = ""
			}
			return runNodeInit(g, f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.data, "data", envOr("RAFTBUS_DATA", ""), "data directory ($RAFTBUS_DATA)")
	fs.StringVar(&f.name, "name", envOr("RAFTBUS_NAME", ""), "node name ($RAFTBUS_NAME)")
	fs.BoolVar(&f.bootstrap, "bootstrap", false, "this node starts a new cluster as Raft ID 1")
	fs.StringVar(&f.cluster, "cluster", envOr("RAFTBUS_CLUSTER", ""), "the cluster this node will join ($RAFTBUS_CLUSTER)")
	fs.StringVarP(&f.writeOut, "write-out", "w", "simple", "output: simple or json")
	return cmd
}

// nodeInitJSON is node init's -w json output.
type nodeInitJSON struct {
	DataDir     string `json:"data_dir"`
	Name        string `json:"name"`
	Cluster     string `json:"cluster"`
	RaftID      string `json:"raft_id,omitempty"`
	Incarnation string `json:"incarnation"`
	PublicKey   string `json:"public_key"`
	Bootstrap   bool   `json:"bootstrap"`
}

func runNodeInit(g *globals, f *nodeInitFlags) error {
	if f.data == "" || f.name == "" {
		return usageErr(errors.New("--data and --name are required"))
	}
	if f.bootstrap == (f.cluster != "") {
		return usageErr(errors.New("give exactly one of --bootstrap (a new cluster) and --cluster ID (join that cluster)"))
	}
	if f.writeOut != "simple" && f.writeOut != "json" {
		return usageErr(fmt.Errorf("--write-out %q: use simple or json", f.writeOut))
	}
	want := datadir.Identity{Name: f.name}
	how := datadir.FirstStartJoin
	if f.bootstrap {
		want.ClusterID, want.RaftID, how = uuid.New(), 1, datadir.FirstStartBootstrap
	} else {
		id, err := uuid.Parse(f.cluster)
		if err != nil || id == uuid.Nil {
			return usageErr(fmt.Errorf("--cluster %q is not a UUID", f.cluster))
		}
		want.ClusterID = id
	}
	if old, err := datadir.Load(f.data); err == nil {
		return withCode(ExitPrecondition, fmt.Errorf("data directory %s already holds identity %s", f.data, old))
	} else if !errors.Is(err, datadir.ErrNoIdentity) && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	id, err := datadir.Create(f.data, want)
	if err != nil {
		return err
	}
	// The first start then bootstraps (or joins) the way init said, and
	// only then: the server refuses empty Raft state once it has started.
	if err := datadir.RecordFirstStart(f.data, id, how); err != nil {
		return err
	}
	return printNodeInit(g, f, id)
}

func printNodeInit(g *globals, f *nodeInitFlags, id *datadir.Identity) error {
	out := nodeInitJSON{DataDir: f.data, Name: id.Name, Cluster: id.ClusterID.String(),
		Incarnation: id.Incarnation.String(), PublicKey: id.PublicKey, Bootstrap: f.bootstrap}
	if id.RaftID != 0 {
		out.RaftID = raftbridge.ID(id.RaftID).String()
	}
	if f.writeOut == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := g.stdout
	fmt.Fprintf(w, "node %s initialised in %s\n", id.Name, f.data)
	fmt.Fprintf(w, "  cluster:     %s\n", id.ClusterID)
	if f.bootstrap {
		fmt.Fprintf(w, "  raft ID:     %s (bootstraps the cluster)\n", out.RaftID)
	} else {
		fmt.Fprintf(w, "  raft ID:     none yet ('raftbus member add %s' assigns it)\n", id.Name)
	}
	fmt.Fprintf(w, "  incarnation: %s\n", id.Incarnation)
	fmt.Fprintf(w, "  public key:  %s\n", id.PublicKey)
	fmt.Fprintf(w, "Next: 'raftbus nats-config --data %s ...' for the NATS server, then 'raftbus node --data %s", f.data, f.data)
	if !f.bootstrap {
		fmt.Fprintf(w, " --join --cluster %s", id.ClusterID)
	}
	fmt.Fprintln(w, " -s NATS_URL'.")
	return nil
}
