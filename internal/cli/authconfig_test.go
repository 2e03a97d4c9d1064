package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/datadir"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// node init creates the identity and key without NATS, records the first
// start, prints the key, and refuses an initialised directory.
func TestNodeInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	out, errOut, code := runCLI(t, "node", "init", "--data", dir, "--name", "n1", "--bootstrap", "-w", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got nodeInitJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	id, err := datadir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Incarnation != id.Incarnation.String() || got.PublicKey != id.PublicKey || !strings.HasPrefix(got.PublicKey, "U") || got.RaftID != "0000000000000001" || !got.Bootstrap {
		t.Fatalf("printed %+v, identity %v key %s", got, id, id.PublicKey)
	}
	if _, err := datadir.LoadKey(dir); err != nil {
		t.Fatal(err)
	}
	if rec, err := datadir.LoadFirstStart(dir); err != nil || rec.How != datadir.FirstStartBootstrap {
		t.Fatalf("first start record %v, %v", rec, err)
	}
	seed, _ := os.ReadFile(datadir.SeedPath(dir))
	if bytes.Contains([]byte(out), bytes.TrimSpace(seed)) {
		t.Fatal("node init printed the seed")
	}
	if _, _, code := runCLI(t, "node", "init", "--data", dir, "--name", "n1", "--bootstrap"); code != ExitPrecondition {
		t.Fatalf("second init: exit %d, want %d", code, ExitPrecondition)
	}
	if _, _, code := runCLI(t, "node", "init", "--data", dir+"x", "--name", "n1"); code != ExitUsage {
		t.Fatalf("neither --bootstrap nor --cluster: exit %d", code)
	}
	join := filepath.Join(t.TempDir(), "n2")
	out, errOut, code = runCLI(t, "node", "init", "--data", join, "--name", "n2", "--cluster", id.ClusterID.String())
	if code != 0 || !strings.Contains(out, "incarnation:") || !strings.Contains(out, "--join") {
		t.Fatalf("join init: exit %d\n%s%s", code, out, errOut)
	}
	if rec, err := datadir.LoadFirstStart(join); err != nil || rec.How != datadir.FirstStartJoin {
		t.Fatalf("join first start record %v, %v", rec, err)
	}
}

// The printed block is a valid nats-server configuration with one nkey
// user per node plus the admin, and the permissions the design names.
func TestNATSConfigParses(t *testing.T) {
	tmp := t.TempDir()
	d1, d2 := filepath.Join(tmp, "n1"), filepath.Join(tmp, "n2")
	runCLI(t, "node", "init", "--data", d1, "--name", "n1", "--bootstrap")
	id1, err := datadir.Load(d1)
	if err != nil {
		t.Fatal(err)
	}
	runCLI(t, "node", "init", "--data", d2, "--name", "n2", "--cluster", id1.ClusterID.String())
	id2, _ := datadir.Load(d2)
	adminKey := filepath.Join(tmp, "admin.nk")
	conf, errOut, code := runCLI(t, "nats-config", "--data", d1, "--data", d2, "--admin-key-out", adminKey)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if st, err := os.Stat(adminKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin key: %v %v", st, err)
	}
	path := filepath.Join(tmp, "nats.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	opts, err := natsserver.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	if len(opts.Nkeys) != 3 {
		t.Fatalf("%d nkey users, want 3\n%s", len(opts.Nkeys), conf)
	}
	perms := map[string]*natsserver.Permissions{}
	for _, u := range opts.Nkeys {
		perms[u.Nkey] = u.Permissions
	}
	p1, p2 := perms[id1.PublicKey], perms[id2.PublicKey]
	if p1 == nil || p2 == nil {
		t.Fatalf("node users missing:\n%s", conf)
	}
	pc := "raftbus." + id1.ClusterID.String()
	st := "raftbus-members-" + id1.ClusterID.String()
	i2 := id2.Incarnation.String()
	for _, want := range []string{pc + ".*." + i2 + ".>", pc + ".members.announce." + i2, pc + ".members.committed." + i2, pc + ".members.outcome.*." + i2, "$JS.API.STREAM.INFO." + st} {
		if !slices.Contains(p2.Publish.Allow, want) {
			t.Errorf("n2 may not publish %s: %v", want, p2.Publish.Allow)
		}
	}
	if !slices.Equal(p2.Subscribe.Allow, []string{pc + "." + i2 + ".>", "_INBOX." + i2 + ".>", pc + ".status"}) {
		t.Errorf("n2 subscribe %v", p2.Subscribe.Allow)
	}
	if !slices.Contains(p1.Publish.Allow, "$JS.API.STREAM.CREATE."+st) || slices.Contains(p2.Publish.Allow, "$JS.API.STREAM.CREATE."+st) {
		t.Errorf("only the bootstrap node creates the stream: n1 %v, n2 %v", p1.Publish.Allow, p2.Publish.Allow)
	}
	if p2.Response == nil || p2.Response.MaxMsgs != 1 {
		t.Errorf("allow_responses %+v", p2.Response)
	}
	for _, p := range []*natsserver.Permissions{p1, p2} {
		if slices.Contains(p.Publish.Allow, pc+".members.request") {
			t.Error("a node may publish membership requests")
		}
	}

	out, _, code := runCLI(t, "nats-config", "--data", d1, "--data", d2, "--admin-user", "admin", "--admin-password", "s3cret", "-w", "json")
	var c authConfig
	if code != 0 || json.Unmarshal([]byte(out), &c) != nil || len(c.Users) != 3 || c.Users[2].User != "admin" {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
	for _, u := range c.Users {
		for _, r := range append(u.PublishAllow, u.SubAllow...) {
			if r.Why == "" {
				t.Errorf("%s: %s has no reason", u.Name, r.Subject)
			}
		}
	}
	nsc, _, code := runCLI(t, "nats-config", "--data", d1, "--data", d2, "--admin-nkey", id1.PublicKey, "-w", "nsc")
	if code != 0 || !strings.Contains(nsc, "nsc add user --account RAFTBUS --name n2-") || !strings.Contains(nsc, "--public-key "+id2.PublicKey) {
		t.Fatalf("nsc: exit %d\n%s", code, nsc)
	}
	other := filepath.Join(tmp, "other")
	runCLI(t, "node", "init", "--data", other, "--name", "x", "--cluster", uuid.NewString())
	if _, _, code := runCLI(t, "nats-config", "--data", d1, "--data", other, "--admin-nkey", id1.PublicKey); code != ExitPrecondition {
		t.Fatalf("two clusters: exit %d", code)
	}
	if _, _, code := runCLI(t, "nats-config", "--data", d1); code != ExitUsage {
		t.Fatalf("no admin: exit %d", code)
	}
}
