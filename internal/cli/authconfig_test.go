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
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/raftbus/raftbus/datadir"
	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
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
	for _, want := range []string{pc + ".*." + i2 + ".>", pc + ".members.announce." + i2, pc + ".members.committed." + i2, pc + ".members.outcome.*." + i2,
		pc + ".members.*.committed." + i2, pc + ".members.*.outcome.*." + i2, "$JS.API.STREAM.INFO." + st} {
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
	for inc, p := range map[string]*natsserver.Permissions{id1.Incarnation.String(): p1, i2: p2} {
		if slices.Contains(p.Publish.Allow, pc+".members.request") || slices.Contains(p.Publish.Allow, pc+".members.*.request") {
			t.Error("a node may publish membership requests")
		}
		for _, subj := range p.Publish.Allow {
			// In every group, a node writes only its own records: every
			// membership subject it may publish ends in its incarnation.
			if strings.HasPrefix(subj, pc+".members.") && !strings.HasSuffix(subj, "."+inc) {
				t.Errorf("node %s may publish %s", inc, subj)
			}
		}
	}
	var admin *natsserver.Permissions
	for _, u := range opts.Nkeys {
		if u.Nkey != id1.PublicKey && u.Nkey != id2.PublicKey {
			admin = u.Permissions
		}
	}
	if admin == nil || !slices.Contains(admin.Publish.Allow, pc+".members.request") || !slices.Contains(admin.Publish.Allow, pc+".members.*.request") {
		t.Errorf("the admin may not request changes of every group: %+v", admin)
	}
	for _, subj := range admin.Publish.Allow {
		if strings.HasPrefix(subj, pc+".members.") && !strings.HasSuffix(subj, ".request") {
			t.Errorf("the admin may publish %s", subj)
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

// On a real server configured with the printed block, a node writes its
// own records of a Raft group other than 0 and the admin that group's
// requests (JetStream acknowledges them), while a node's attempt at
// another node's record of the group, at a group's request or at a
// group-scoped announcement is refused by the server and never reaches
// the stream.
func TestNATSConfigGroupPermissionsOnARealServer(t *testing.T) {
	isolateEnv(t)
	tmp := t.TempDir()
	d1, d2 := filepath.Join(tmp, "n1"), filepath.Join(tmp, "n2")
	if _, errOut, code := runCLI(t, "node", "init", "--data", d1, "--name", "n1", "--bootstrap"); code != 0 {
		t.Fatal(errOut)
	}
	id1, err := datadir.Load(d1)
	if err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI(t, "node", "init", "--data", d2, "--name", "n2", "--cluster", id1.ClusterID.String()); code != 0 {
		t.Fatal(errOut)
	}
	id2, _ := datadir.Load(d2)
	adminKey := filepath.Join(tmp, "admin.nk")
	conf, errOut, code := runCLI(t, "nats-config", "--data", d1, "--data", d2, "--admin-key-out", adminKey)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	srv, _ := testnats.RunWithConfig(t, conf)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const group = 3
	// asNode opens group's view of the stream as the node of dir.
	asNode := func(dir string, id *datadir.Identity, w *testnats.PermWatcher, create bool) (*nats.Conn, *membership.Stream) {
		t.Helper()
		kp, err := datadir.LoadKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL(), nats.Nkey(id.PublicKey, kp.Sign), nats.CustomInboxPrefix("_INBOX."+id.Incarnation.String()),
			nats.ErrorHandler(w.Handler))
		if err != nil {
			t.Fatalf("connect as %s: %v", id.Name, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cfg := membership.StreamConfig{JS: js, Cluster: id.ClusterID, Group: group, Incarnation: id.Incarnation, Signer: kp}
		open := membership.OpenStream
		if create {
			open = membership.CreateStream
		}
		s, err := open(ctx, cfg)
		if err != nil {
			t.Fatalf("%s opens the stream: %v", id.Name, err)
		}
		return nc, s
	}
	// n1 bootstraps: it creates the stream, and writes in group 3.
	_, s1 := asNode(d1, id1, &testnats.PermWatcher{}, true)
	m1 := membership.Member{ID: 1, Name: "n1", Incarnation: id1.Incarnation, PublicKey: id1.PublicKey}
	if err := s1.PublishCommitted(ctx, membership.Committed{Index: 1, Op: membership.OpAdd, Member: m1, Version: 1}); err != nil {
		t.Fatalf("n1's committed record of group %d: %v", group, err)
	}
	if err := s1.PublishOutcome(ctx, membership.Outcome{RequestID: "r1", Status: membership.StatusApplied, Index: 1}); err != nil {
		t.Fatalf("n1's outcome of group %d: %v", group, err)
	}
	opt, err := nats.NkeyOptionFromSeed(adminKey)
	if err != nil {
		t.Fatal(err)
	}
	nca, err := nats.Connect(srv.ClientURL(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nca.Close()
	jsa, err := jetstream.New(nca)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := membership.OpenStream(ctx, membership.StreamConfig{JS: jsa, Cluster: id1.ClusterID, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Submit(ctx, membership.Request{ID: "r2", Op: membership.OpRemove, RaftID: 1}, 0); err != nil {
		t.Fatalf("the admin's request in group %d: %v", group, err)
	}
	w := &testnats.PermWatcher{}
	nc2, s2 := asNode(d2, id2, w, false)
	if err := s2.PublishCommitted(ctx, membership.Committed{Index: 1, Op: membership.OpAdd, Member: m1, Version: 1}); err != nil {
		t.Fatalf("n2's own committed record of group %d: %v", group, err)
	}
	pc := "raftbus." + id1.ClusterID.String() + ".members.g3."
	i1, i2 := id1.Incarnation.String(), id2.Incarnation.String()
	refused := []string{pc + "committed." + i1, pc + "outcome.r1." + i1, pc + "request", pc + "announce." + i2}
	for _, subj := range refused {
		if err := nc2.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc2.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, subj := range refused {
		w.Refused(t, subj)
	}
	recs, err := admin.ReadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, strings.TrimPrefix(r.Subject, pc))
	}
	want := []string{"committed." + i1, "outcome.r1." + i1, "request", "committed." + i2}
	if !slices.Equal(got, want) {
		t.Fatalf("group %d's records: %v, want %v", group, got, want)
	}
}
