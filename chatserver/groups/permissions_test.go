package groups_test

import (
	"fmt"
	"testing"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// command is one thing a user may try in a group; it returns the error code.
type command struct {
	name string
	run  func(c *conn, g fixture) uint32
	// want is the code per role (owner, admin, member, removed, banned,
	// non-member, anonymous).
	want [7]uint32
}

// fixture is a fresh group with a member of every kind.
type fixture struct{ channel string }

var roles = [7]string{"owner", "admin", "member", "removed", "banned", "nonmember", "anonymous"}

const (
	ok     = 0
	denied = 103
	bad    = 107
)

var (
	readers = [7]uint32{ok, ok, ok, denied, denied, denied, denied}
	admins  = [7]uint32{ok, ok, denied, denied, denied, denied, denied}
	owner   = [7]uint32{ok, denied, denied, denied, denied, denied, denied}
)

func rpcCode(method string, params func(g fixture) map[string]any) func(c *conn, g fixture) uint32 {
	return func(c *conn, g fixture) uint32 {
		_, e := c.call(method, params(g))
		return errCode(e)
	}
}

func ch(g fixture) map[string]any { return map[string]any{"channel": g.channel} }

func withUser(user string) func(g fixture) map[string]any {
	return func(g fixture) map[string]any { return map[string]any{"channel": g.channel, "user": user} }
}

var commands = []command{
	{"subscribe", func(c *conn, g fixture) uint32 {
		return c.cmd(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: g.channel}})
	}, readers},
	{"publish", func(c *conn, g fixture) uint32 {
		return c.cmd(&protocol.Command{Publish: &protocol.PublishRequest{Channel: g.channel, Data: []byte(`{"text":"x"}`)}})
	}, readers},
	{"history", func(c *conn, g fixture) uint32 {
		return c.cmd(&protocol.Command{History: &protocol.HistoryRequest{Channel: g.channel, Limit: 10}})
	}, readers},
	{"presence", func(c *conn, g fixture) uint32 {
		return c.cmd(&protocol.Command{Presence: &protocol.PresenceRequest{Channel: g.channel}})
	}, readers},
	{"presence_stats", func(c *conn, g fixture) uint32 {
		return c.cmd(&protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: g.channel}})
	}, readers},
	{"rpc publish", rpcCode("publish", func(g fixture) map[string]any {
		return map[string]any{"channel": g.channel, "data": map[string]string{"text": "x"}}
	}), readers},
	{"rpc typing", rpcCode("typing", ch), readers},
	{"rpc read", rpcCode("read", func(g fixture) map[string]any { return map[string]any{"channel": g.channel, "offset": 1} }), readers},
	{"rpc receipts", rpcCode("receipts", ch), readers},
	{"group.get", rpcCode("group.get", ch), readers},
	{"group.members", rpcCode("group.members", ch), readers},
	{"group.invite", rpcCode("group.invite", ch), readers},
	{"group.add", rpcCode("group.add", withUser("newcomer")), readers},
	{"group.leave", rpcCode("group.leave", ch), [7]uint32{bad, ok, ok, denied, denied, denied, denied}},
	{"group.update", rpcCode("group.update", func(g fixture) map[string]any { return map[string]any{"channel": g.channel, "title": "new"} }), admins},
	{"group.audit", rpcCode("group.audit", ch), admins},
	{"group.remove", rpcCode("group.remove", withUser("vic")), admins},
	{"group.ban", rpcCode("group.ban", withUser("vic")), admins},
	{"group.unban", rpcCode("group.unban", withUser("ben")), admins},
	{"group.mute", rpcCode("group.mute", func(g fixture) map[string]any {
		return map[string]any{"channel": g.channel, "user": "vic", "duration": 60}
	}), admins},
	{"group.role", rpcCode("group.role", func(g fixture) map[string]any {
		return map[string]any{"channel": g.channel, "user": "vic", "role": "admin"}
	}), owner},
	{"group.transfer", rpcCode("group.transfer", withUser("vic")), owner},
	{"group.delete", rpcCode("group.delete", ch), owner},
}

// TestPermissionTable tries every command as every kind of user in a
// fresh group each time, and checks the error code (0: allowed).
// In memory on one replica, and on RabbitMQ and PostgreSQL with the owner
// on one replica and everyone else on the other, so every decision there
// rests on membership written by another replica.
func TestPermissionTable(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.AllowAnonymous = true
	cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond = 0, 0
	cfg.Groups.InvitesPerHour = 1_000_000
	t.Run("memory", func(t *testing.T) {
		srv := servertest.Start(t, cfg, nil, nil)
		permissionTable(t, srv, srv)
	})
	t.Run("rabbitmq+postgres", func(t *testing.T) {
		peers := servertest.RealPeers(t, cfg, 2)
		permissionTable(t, peers[0], peers[1])
	})
}

func permissionTable(t *testing.T, ownerSrv, others *servertest.Server) {
	users := map[string]string{"owner": "alice", "admin": "carol", "member": "bob", "removed": "rita", "banned": "ben", "nonmember": "nora", "anonymous": ""}
	conns := map[string]*conn{}
	for role, u := range users {
		srv := others
		if role == "owner" {
			srv = ownerSrv
		}
		conns[role] = dial(t, srv, u)
	}
	alice := conns["owner"]
	n := 0
	setup := func() fixture {
		n++
		g := fixture{alice.must("group.create", map[string]any{"id": fmt.Sprintf("perm-%d", n), "title": "perm"})["channel"].(string)}
		for _, u := range []string{"carol", "bob", "rita", "vic"} {
			alice.must("group.add", map[string]any{"channel": g.channel, "user": u})
		}
		alice.must("group.role", map[string]any{"channel": g.channel, "user": "carol", "role": "admin"})
		alice.must("group.remove", map[string]any{"channel": g.channel, "user": "rita"})
		alice.must("group.ban", map[string]any{"channel": g.channel, "user": "ben"})
		return g
	}
	fails := 0
	for _, c := range commands {
		for i, role := range roles {
			g := setup()
			if got := c.run(conns[role], g); got != c.want[i] {
				t.Errorf("%s as %s: code %d, want %d", c.name, role, got, c.want[i])
				fails++
			}
			// The connection must leave the group's channel for the next fixture.
			conns[role].cmd(&protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: g.channel}})
		}
	}
	t.Logf("%d commands × %d kinds of user, %d wrong", len(commands), len(roles), fails)
}
