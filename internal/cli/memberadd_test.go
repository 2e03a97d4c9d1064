package cli

import (
	"strings"
	"testing"

	"github.com/raftbus/raftbus/membership"
)

// `member add` prints a start command with every flag the node needs,
// --listen included, taken from the node's announcement.
func TestStartCommandIsComplete(t *testing.T) {
	a := membership.AnnounceSeen{Announce: membership.Announce{Name: "n4", DataDir: "/var/lib/raftbus/my n4", ClientURL: "https://10.0.0.4:8004"}}
	got := startCommand("c1", "acme.rb", "nats://a:4222,nats://b:4222", a)
	for _, want := range []string{"raftbus node --join --cluster c1 --name n4", "--data '/var/lib/raftbus/my n4'", "--listen 10.0.0.4:8004",
		"--listen-tls-cert", "--prefix acme.rb", "-s nats://a:4222,nats://b:4222"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	got = startCommand("c1", "raftbus", "", membership.AnnounceSeen{Announce: membership.Announce{Name: "n5"}})
	if strings.Contains(got, "--prefix") || !strings.Contains(got, "--data DIR --listen HOST:PORT -s NATS_URL") {
		t.Errorf("placeholders: %q", got)
	}
}

func TestPromotionProgressLine(t *testing.T) {
	sts := []membership.NodeStatus{{RaftID: 1, Leader: 1, Applied: 120}, {RaftID: 4, Leader: 1, Applied: 80}}
	if got := progressLine(sts, 4, "n4"); !strings.Contains(got, "applied 80 of the leader's 120") {
		t.Fatal(got)
	}
	if got := progressLine(sts[:1], 4, "n4"); !strings.Contains(got, "to start") {
		t.Fatal(got)
	}
}
