package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/raftbus/raftbus/bus"
	"github.com/raftbus/raftbus/membership"
)

// authNode is what the generated permissions need to know of one node.
type authNode struct {
	Name        string    `json:"name"`
	RaftID      string    `json:"raft_id,omitempty"`
	Incarnation uuid.UUID `json:"incarnation"`
	PublicKey   string    `json:"public_key"`
	// Bootstrap marks a node that may be the first leader of a new
	// cluster and so must create the membership stream.
	Bootstrap bool `json:"bootstrap"`
}

// permRule is one allowed subject and why it is needed.
type permRule struct {
	Subject string `json:"subject"`
	Why     string `json:"why"`
}

// authUser is one generated NATS user: an nkey (or a user name and
// password) and its permissions.
type authUser struct {
	Name         string     `json:"name"`
	Comment      string     `json:"comment"`
	Nkey         string     `json:"nkey,omitempty"`
	User         string     `json:"user,omitempty"`
	Password     string     `json:"password,omitempty"`
	PublishAllow []permRule `json:"publish_allow"`
	PublishDeny  []permRule `json:"publish_deny,omitempty"`
	SubAllow     []permRule `json:"subscribe_allow"`
	// AllowResponses is nats-server's allow_responses: one reply to each
	// request received, on the request's reply subject.
	AllowResponses bool `json:"allow_responses"`
}

// authConfig is everything nats-config prints.
type authConfig struct {
	Prefix  string     `json:"prefix"`
	Cluster uuid.UUID  `json:"cluster"`
	Stream  string     `json:"stream"`
	Users   []authUser `json:"users"`
}

// responseExpiry bounds how long a node may answer a request it received
// (status queries are answered at once).
const responseExpiry = time.Minute

// buildAuthConfig derives the users and permissions of a cluster's nodes
// and of its admin. admin is the admin user (Nkey or User/Password set).
func buildAuthConfig(prefix string, cluster uuid.UUID, nodes []authNode, admin authUser) authConfig {
	if prefix == "" {
		prefix = bus.DefaultPrefix
	}
	c := authConfig{Prefix: prefix, Cluster: cluster, Stream: membership.StreamName(prefix, cluster)}
	sorted := append([]authNode(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, n := range sorted {
		c.Users = append(c.Users, nodeUser(prefix, cluster, c.Stream, n))
	}
	c.Users = append(c.Users, adminUser(prefix, cluster, c.Stream, admin))
	return c
}

// jsAPIRead are the JetStream API subjects a reader of the membership
// stream uses: bind, read the latest record of a subject, and run ordered
// consumers.
func jsAPIRead(st string) []permRule {
	return []permRule{
		{"$JS.API.STREAM.INFO." + st, "bind to the membership stream (OpenStream) and read its creation time"},
		{"$JS.API.STREAM.MSG.GET." + st, "read the latest record of one subject (last request, last committed change)"},
		{"$JS.API.CONSUMER.CREATE." + st + ".>", "ordered consumers that read and watch the records"},
		{"$JS.API.CONSUMER.INFO." + st + ".>", "ordered consumers check their consumer after a reconnect"},
		{"$JS.API.CONSUMER.DELETE." + st + ".>", "delete a watch's consumer when it stops, instead of waiting for it to expire"},
		{"$JS.API.CONSUMER.MSG.NEXT." + st + ".>", "pull the next records from an ordered consumer"},
	}
}

func nodeUser(prefix string, cluster uuid.UUID, st string, n authNode) authUser {
	pc := prefix + "." + cluster.String()
	i := n.Incarnation.String()
	u := authUser{
		Name:    n.Name + "-" + i[len(i)-12:],
		Comment: fmt.Sprintf("node %s, incarnation %s", n.Name, i),
		Nkey:    n.PublicKey,
		PublishAllow: []permRule{
			{pc + ".*." + i + ".>", "Raft traffic to any peer with this node as the source token, so a delivery's source is authenticated"},
			{pc + ".members.announce." + i, "announce this incarnation (name, URL, public key) on the membership stream"},
			{pc + ".members.committed." + i, "attest each membership change this node applies (readers need a majority of voters)"},
			{pc + ".members.outcome.*." + i, "record the outcome of a membership request while this node is the leader"},
			{pc + ".members.*.committed." + i, "attest the membership changes of every other Raft group this node is in (members.g<group>.committed)"},
			{pc + ".members.*.outcome.*." + i, "record the outcome of a membership request of every other Raft group this node leads (members.g<group>.outcome)"},
		},
		PublishDeny: []permRule{
			{pc + ".members." + i + ".>", "the transport pattern above would also match these membership-stream subjects; no record kind uses them"},
		},
		SubAllow: []permRule{
			{pc + "." + i + ".>", "Raft traffic addressed to this incarnation, and nothing else"},
			{"_INBOX." + i + ".>", "replies to this node's own requests (JetStream API, publish acks, consumers): the per-incarnation inbox prefix, never other clients' replies"},
			{pc + ".status", "answer status queries (raftbus member list, last seen)"},
		},
		AllowResponses: true,
	}
	u.PublishAllow = append(u.PublishAllow, jsAPIRead(st)...)
	if n.Bootstrap {
		u.PublishAllow = append(u.PublishAllow, permRule{"$JS.API.STREAM.CREATE." + st,
			"this node bootstraps the cluster: its first leader creates the membership stream (drop once the cluster runs)"})
	}
	return u
}

func adminUser(prefix string, cluster uuid.UUID, st string, admin authUser) authUser {
	pc := prefix + "." + cluster.String()
	admin.Name = "admin"
	admin.Comment = "admin: raftbus member (add, remove, promote, list, history)"
	admin.PublishAllow = append([]permRule{
		{pc + ".members.request", "request membership changes; only the admin may"},
		{pc + ".members.*.request", "request membership changes of every other Raft group (members.g<group>.request); only the admin may"},
		{pc + ".status", "query the running nodes' status (member list)"},
		{"$JS.API.STREAM.NAMES", "find the cluster when --cluster is not given"},
		{"$JS.API.STREAM.CREATE." + st, "member stream repair: create the membership stream again if it was lost (the stream's configuration still denies deletes and purges)"},
	}, jsAPIRead(st)...)
	admin.SubAllow = []permRule{
		{"_INBOX.>", "replies to the CLI's requests (default inbox prefix _INBOX; narrow it with --inbox-prefix)"},
	}
	admin.AllowResponses = false
	return admin
}

func subjects(rules []permRule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.Subject
	}
	return out
}

// serverPermissions converts a user's permissions for an embedded server.
func (u authUser) serverPermissions() *natsserver.Permissions {
	p := &natsserver.Permissions{
		Publish:   &natsserver.SubjectPermission{Allow: subjects(u.PublishAllow), Deny: subjects(u.PublishDeny)},
		Subscribe: &natsserver.SubjectPermission{Allow: subjects(u.SubAllow)},
	}
	if u.AllowResponses {
		p.Response = &natsserver.ResponsePermission{MaxMsgs: 1, Expires: responseExpiry}
	}
	return p
}

// serverUsers converts the config for an embedded nats-server's options.
func (c authConfig) serverUsers() ([]*natsserver.NkeyUser, []*natsserver.User) {
	var nk []*natsserver.NkeyUser
	var users []*natsserver.User
	for _, u := range c.Users {
		if u.Nkey != "" {
			nk = append(nk, &natsserver.NkeyUser{Nkey: u.Nkey, Permissions: u.serverPermissions()})
		} else {
			users = append(users, &natsserver.User{Username: u.User, Password: u.Password, Permissions: u.serverPermissions()})
		}
	}
	return nk, users
}

// confString quotes s for a nats-server config file; quoted strings are
// not expanded, so "$JS..." stays literal.
func confString(s string) string { return fmt.Sprintf("%q", s) }

func confList(b *strings.Builder, indent, key string, rules []permRule) {
	if len(rules) == 0 {
		return
	}
	fmt.Fprintf(b, "%s%s: [\n", indent, key)
	for _, r := range rules {
		fmt.Fprintf(b, "%s  %s  # %s\n", indent, confString(r.Subject), r.Why)
	}
	fmt.Fprintf(b, "%s]\n", indent)
}

// serverConf renders the nats-server authorization block.
func (c authConfig) serverConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# raftbus cluster %s (prefix %q, membership stream %s)\n", c.Cluster, c.Prefix, c.Stream)
	fmt.Fprintf(&b, "# Generated by 'raftbus nats-config'; see SECURITY.md for why each permission is needed.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range c.Users {
		fmt.Fprintf(&b, "    # %s\n    {\n", u.Comment)
		if u.Nkey != "" {
			fmt.Fprintf(&b, "      nkey: %s\n", confString(u.Nkey))
		} else {
			fmt.Fprintf(&b, "      user: %s\n      password: %s\n", confString(u.User), confString(u.Password))
		}
		b.WriteString("      permissions: {\n        publish: {\n")
		confList(&b, "          ", "allow", u.PublishAllow)
		confList(&b, "          ", "deny", u.PublishDeny)
		b.WriteString("        }\n        subscribe: {\n")
		confList(&b, "          ", "allow", u.SubAllow)
		b.WriteString("        }\n")
		if u.AllowResponses {
			fmt.Fprintf(&b, "        allow_responses: { max: 1, expires: %q }  # answer status queries once each\n", responseExpiry.String())
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// nscCommands renders the same users for operator (JWT) mode. The nodes
// keep their own keys: nsc records only the public key, and each node
// connects with --jwt FILE (the user JWT nsc describes) signed by its seed.
func (c authConfig) nscCommands(account string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Operator (JWT) mode: the same users in account %s.\n", account)
	for _, u := range c.Users {
		name := u.Name
		fmt.Fprintf(&b, "# %s\n", u.Comment)
		if u.Nkey == "" {
			fmt.Fprintf(&b, "nsc add user --account %s --name %s\n", account, name)
		} else {
			fmt.Fprintf(&b, "nsc add user --account %s --name %s --public-key %s\n", account, name, u.Nkey)
		}
		fmt.Fprintf(&b, "nsc edit user --account %s --name %s \\\n  --allow-pub %s \\\n", account, name, shellQuote(strings.Join(subjects(u.PublishAllow), ",")))
		if len(u.PublishDeny) > 0 {
			fmt.Fprintf(&b, "  --deny-pub %s \\\n", shellQuote(strings.Join(subjects(u.PublishDeny), ",")))
		}
		if u.AllowResponses {
			fmt.Fprintf(&b, "  --allow-pub-response=1 --response-ttl %s \\\n", responseExpiry)
		}
		fmt.Fprintf(&b, "  --allow-sub %s\n", shellQuote(strings.Join(subjects(u.SubAllow), ",")))
		if u.Name != "admin" {
			fmt.Fprintf(&b, "nsc describe user --account %s --name %s --raw > %s.jwt   # then: raftbus node --jwt %s.jwt ...\n", account, name, name, name)
		}
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
