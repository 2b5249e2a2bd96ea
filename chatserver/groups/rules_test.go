package groups_test

import (
	"strings"
	"testing"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func publish(c *conn, channel string) uint32 {
	return c.cmd(&protocol.Command{Publish: &protocol.PublishRequest{Channel: channel, Data: []byte(`{"text":"hi"}`)}})
}

// The rules behind the table: mutes, who may post and invite, ownership
// moving, leaving, the search rate.
func TestGroupRules(t *testing.T) {
	cfg := servertest.Config()
	cfg.Groups.SearchesPerMinute = 3
	srv := servertest.Start(t, cfg, nil, nil)
	alice, bob, carol := dial(t, srv, "alice"), dial(t, srv, "bob"), dial(t, srv, "carol")
	grp := alice.must("group.create", map[string]any{"title": "rules"})["channel"].(string)
	alice.must("group.add", map[string]any{"channel": grp, "user": "bob"})
	alice.must("group.add", map[string]any{"channel": grp, "user": "carol"})
	alice.must("group.role", map[string]any{"channel": grp, "user": "carol", "role": "admin"})

	t.Run("a muted member reads but does not post until unmuted", func(t *testing.T) {
		res := carol.must("group.mute", map[string]any{"channel": grp, "user": "bob", "duration": 600, "reason": "calm down"})
		if res["muted_until"] == nil {
			t.Fatalf("mute: %v", res)
		}
		rep := bob.r.Reply(t, bob.r.Command(t, &protocol.Command{Publish: &protocol.PublishRequest{Channel: grp, Data: []byte(`{}`)}}))
		if rep.Error == nil || rep.Error.Code != 103 || !strings.Contains(rep.Error.Message, "muted until") {
			t.Fatalf("muted publish: %+v", rep.Error)
		}
		if _, e := bob.call("typing", map[string]any{"channel": grp}); errCode(e) != 103 {
			t.Fatalf("muted typing: %v", e)
		}
		if got := bob.cmd(&protocol.Command{History: &protocol.HistoryRequest{Channel: grp}}); got != 0 {
			t.Fatalf("muted history: %d", got)
		}
		if _, e := bob.call("group.mute", map[string]any{"channel": grp, "user": "carol", "duration": 60}); errCode(e) != 103 {
			t.Fatalf("a member muting an admin: %v", e)
		}
		if _, e := carol.call("group.mute", map[string]any{"channel": grp, "user": "alice", "duration": 60}); errCode(e) != 103 {
			t.Fatalf("an admin muting the owner: %v", e)
		}
		carol.must("group.mute", map[string]any{"channel": grp, "user": "bob", "duration": 0})
		if got := publish(bob, grp); got != 0 {
			t.Fatalf("unmuted publish: %d", got)
		}
	})
	t.Run("who_posts and who_invites admins", func(t *testing.T) {
		carol.must("group.update", map[string]any{"channel": grp, "who_posts": "admins", "who_invites": "admins"})
		if got := publish(bob, grp); got != 103 {
			t.Fatalf("member posting in an admins-only group: %d", got)
		}
		if got := publish(carol, grp); got != 0 {
			t.Fatalf("admin posting: %d", got)
		}
		if _, e := bob.call("group.invite", map[string]any{"channel": grp}); errCode(e) != 103 {
			t.Fatalf("member inviting: %v", e)
		}
		carol.must("group.update", map[string]any{"channel": grp, "who_posts": "members", "who_invites": "members"})
		if got := publish(bob, grp); got != 0 {
			t.Fatalf("member posting again: %d", got)
		}
	})
	t.Run("an admin removes members only", func(t *testing.T) {
		if _, e := carol.call("group.remove", map[string]any{"channel": grp, "user": "alice"}); errCode(e) != 103 {
			t.Fatalf("admin removing the owner: %v", e)
		}
		if _, e := carol.call("group.remove", map[string]any{"channel": grp, "user": "nobody"}); errCode(e) != 107 {
			t.Fatalf("removing a non-member: %v", e)
		}
	})
	t.Run("ownership moves, then the old owner may leave", func(t *testing.T) {
		if _, e := alice.call("group.leave", map[string]any{"channel": grp}); errCode(e) != 107 {
			t.Fatalf("owner leaving: %v", e)
		}
		if _, e := alice.call("group.transfer", map[string]any{"channel": grp, "user": "nobody"}); errCode(e) != 107 {
			t.Fatalf("transfer to a non-member: %v", e)
		}
		alice.must("group.transfer", map[string]any{"channel": grp, "user": "bob"})
		g := bob.must("group.get", map[string]any{"channel": grp})
		if g["role"] != "owner" || g["group"].(map[string]any)["owner"] != "bob" {
			t.Fatalf("after transfer: %v", g)
		}
		if got := alice.cmd(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: grp}}); got != 0 {
			t.Fatalf("subscribe: %d", got)
		}
		alice.must("group.leave", map[string]any{"channel": grp})
		if got := alice.cmd(&protocol.Command{History: &protocol.HistoryRequest{Channel: grp}}); got != 103 {
			t.Fatalf("history after leaving: %d", got)
		}
		if _, e := alice.call("group.get", map[string]any{"channel": grp}); errCode(e) != 103 {
			t.Fatalf("get after leaving: %v", e)
		}
	})
	t.Run("unread leaves out the groups the caller is not in", func(t *testing.T) {
		for who, want := range map[*conn]int{bob: 2, alice: 1} { // alice has left
			states := who.must("unread", map[string]any{"channels": []string{grp, "room:open"}})["states"].([]any)
			if len(states) != want {
				t.Fatalf("unread states: %v, want %d", states, want)
			}
		}
	})
	t.Run("searches per minute", func(t *testing.T) {
		for i := range 3 {
			if _, e := bob.call("search", map[string]any{"query": "hi"}); e != nil {
				t.Fatalf("search %d: %v", i, e)
			}
		}
		if _, e := bob.call("search", map[string]any{"query": "hi"}); errCode(e) != 111 {
			t.Fatalf("fourth search in a minute: %v", e)
		}
	})
	t.Run("anonymous and non-group channels", func(t *testing.T) {
		if _, e := bob.call("group.invite", map[string]any{"channel": "room:x"}); errCode(e) != 107 {
			t.Fatalf("invite to a room: %v", e)
		}
		if _, e := bob.call("group.join", map[string]any{"code": "nope"}); errCode(e) != 107 {
			t.Fatalf("unknown code: %v", e)
		}
	})
}
