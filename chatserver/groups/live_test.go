package groups_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// device is one SDK connection with the inbox events of its personal channel.
type device struct {
	*centrifuge.Client
	inbox chan inboxEvent
}

type inboxEvent struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Event   string `json:"event"`
	Mention bool   `json:"mention"`
	Entry   *struct {
		Unread     uint64 `json:"unread"`
		Mentions   int    `json:"mentions"`
		LastOffset uint64 `json:"last_offset"`
		Preview    string `json:"preview"`
	} `json:"entry"`
	Settings *struct {
		Title string `json:"title"`
		Topic string `json:"topic"`
	} `json:"settings"`
	By    string `json:"by"`
	Muted *bool  `json:"muted"`
}

func connectDevice(t *testing.T, srv *servertest.Server, token string) *device {
	t.Helper()
	d := &device{inbox: make(chan inboxEvent, 256)}
	c := servertest.NewClient(t, srv.WS, "json", centrifuge.Config{Token: token})
	c.OnPublication(func(e centrifuge.ServerPublicationEvent) {
		if e.Tags["type"] != "inbox" {
			return
		}
		var ev inboxEvent
		if err := json.Unmarshal(e.Data, &ev); err == nil {
			servertest.Send(d.inbox, ev)
		}
	})
	connected := make(chan struct{}, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	servertest.Recv(t, connected, "connected")
	d.Client = c
	return d
}

// waitInbox waits for an inbox event of type typ in channel.
func (d *device) waitInbox(t *testing.T, typ, channel string) inboxEvent {
	t.Helper()
	deadline := time.After(3 * servertest.Timeout)
	for {
		select {
		case ev := <-d.inbox:
			if ev.Type == typ && ev.Channel == channel {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s inbox event for %s", typ, channel)
		}
	}
}

func (d *device) call(t *testing.T, method string, params any) (map[string]any, *centrifuge.Error) {
	t.Helper()
	data, _ := json.Marshal(params)
	ctx, cancel := context.WithTimeout(context.Background(), servertest.Timeout)
	defer cancel()
	res, err := d.RPC(ctx, method, data)
	if err != nil {
		var e *centrifuge.Error
		if errors.As(err, &e) {
			return nil, e
		}
		t.Fatalf("%s: %v", method, err)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Data, &out); err != nil {
		t.Fatal(err)
	}
	return out, nil
}

func (d *device) must(t *testing.T, method string, params any) map[string]any {
	t.Helper()
	out, e := d.call(t, method, params)
	if e != nil {
		t.Fatalf("%s %v: %d %s", method, params, e.Code, e.Message)
	}
	return out
}

func wantCode(t *testing.T, what string, e *centrifuge.Error, want uint32) {
	t.Helper()
	if e == nil || e.Code != want {
		t.Fatalf("%s: got %v, want code %d", what, e, want)
	}
}

func token(t *testing.T, user, name string) string {
	c := servertest.TokenClaims(user, time.Hour)
	c.Name = name
	return servertest.Sign(t, c, servertest.Secret)
}

// TestGroupsOnTwoReplicas runs the story on two replicas: in memory,
// and on RabbitMQ and PostgreSQL.
func TestGroupsOnTwoReplicas(t *testing.T) {
	for _, backend := range []string{"memory", "rabbitmq+postgres"} {
		t.Run(backend, func(t *testing.T) {
			cfg := servertest.Config()
			var peers []*servertest.Server
			if backend == "memory" {
				peers = servertest.Peers(t, cfg, 2)
			} else {
				peers = servertest.RealPeers(t, cfg, 2)
			}
			story(t, peers[0], peers[1])
		})
	}
}

func story(t *testing.T, a, b *servertest.Server) {
	alice := connectDevice(t, a, token(t, "alice", "Alice A."))
	phone := connectDevice(t, a, token(t, "bob", "Bob"))
	desktop := connectDevice(t, b, token(t, "bob", "Bob"))
	carol := connectDevice(t, b, token(t, "carol", ""))
	mallory := [2]*device{connectDevice(t, a, token(t, "mallory", "")), connectDevice(t, b, token(t, "mallory", ""))}

	// alice creates a group and invites bob by code; he joins on the other replica.
	grp := alice.must(t, "group.create", map[string]any{"title": "Team", "topic": "launch"})["channel"].(string)
	code := alice.must(t, "group.invite", map[string]any{"channel": grp, "max_uses": 5})["code"].(string)
	desktop.must(t, "group.join", map[string]any{"code": code})
	phone.waitInbox(t, "member", grp)
	alice.must(t, "group.add", map[string]any{"channel": grp, "user": "carol"})
	alice.must(t, "group.add", map[string]any{"channel": grp, "user": "mallory"})
	alice.must(t, "group.role", map[string]any{"channel": grp, "user": "carol", "role": "admin"})
	if ev := carol.waitInbox(t, "member", grp); ev.Event != "added" {
		t.Fatalf("carol's first event: %+v", ev)
	}

	// Membership made on replica a lets mallory in on replica b and a.
	var subs [2]*servertest.Sub
	for i, m := range mallory {
		subs[i] = servertest.Subscribe(t, m.Client, grp, centrifuge.SubscriptionConfig{})
	}
	spam := mallory[1].must(t, "publish", map[string]any{"channel": grp, "data": map[string]string{"text": "buy now"}})["offset"].(float64)

	// A message that mentions bob reaches both of his devices' inboxes.
	off := alice.must(t, "publish", map[string]any{"channel": grp, "data": map[string]string{"text": "hello @bob, the quarterly report is ready"}})["offset"].(float64)
	for _, d := range []*device{phone, desktop} {
		for {
			ev := d.waitInbox(t, "message", grp)
			if ev.Entry.LastOffset == uint64(off) {
				if !ev.Mention || ev.Entry.Preview == "" {
					t.Fatalf("message event %+v", ev)
				}
				break
			}
		}
	}
	inbox := desktop.must(t, "inbox", map[string]any{})["conversations"].([]any)
	if len(inbox) != 1 {
		t.Fatalf("bob's inbox: %v", inbox)
	}
	entry := inbox[0].(map[string]any)
	if entry["title"] != "Team" || entry["unread"] != 2.0 || entry["mentions"] != 1.0 || entry["last_user"] != "alice" {
		t.Fatalf("bob's inbox entry: %v", entry)
	}

	// Reading on the phone clears the badge on the desktop.
	phone.must(t, "read", map[string]any{"channel": grp, "offset": off})
	for {
		ev := desktop.waitInbox(t, "read", grp)
		if ev.Entry.Unread == 0 && ev.Entry.Mentions == 0 {
			break
		}
	}

	// Muting on the phone (replica a) reaches the desktop (replica b).
	phone.must(t, "inbox.mute", map[string]any{"channel": grp, "muted": true})
	if ev := desktop.waitInbox(t, "mute", grp); ev.Muted == nil || !*ev.Muted {
		t.Fatalf("mute event %+v", ev)
	}
	phone.must(t, "inbox.mute", map[string]any{"channel": grp, "muted": false})
	if ev := desktop.waitInbox(t, "mute", grp); ev.Muted == nil || *ev.Muted {
		t.Fatalf("unmute event %+v", ev)
	}

	// carol, an admin on replica b, renames the group: every member's
	// devices on both replicas hear it, so their inboxes show the new title.
	carol.must(t, "group.update", map[string]any{"channel": grp, "title": "Launch team"})
	for _, d := range []*device{phone, desktop, alice} {
		if ev := d.waitInbox(t, "settings", grp); ev.Settings == nil || ev.Settings.Title != "Launch team" || ev.Settings.Topic != "launch" || ev.By != "carol" {
			t.Fatalf("settings event %+v", ev)
		}
	}

	// carol, an admin, bans mallory: both of mallory's subscriptions end at
	// once with 2101, and she can neither post, read nor rejoin.
	carol.must(t, "group.ban", map[string]any{"channel": grp, "user": "mallory", "reason": "spam"})
	for i, s := range subs {
		e := servertest.Recv(t, s.Unsubscribed, "mallory's unsubscribe")
		if e.Code != 2101 {
			t.Fatalf("mallory's subscription %d ended with %d %q", i, e.Code, e.Reason)
		}
	}
	_, e := mallory[0].call(t, "publish", map[string]any{"channel": grp, "data": map[string]string{"text": "still here"}})
	wantCode(t, "banned publish", e, 103)
	_, e = mallory[1].call(t, "group.join", map[string]any{"code": code})
	wantCode(t, "banned rejoin", e, 103)
	if got := dial(t, b, "mallory").cmd(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: grp}}); got != 103 {
		t.Fatalf("banned subscribe: %d", got)
	}

	// carol deletes mallory's message; the audit log says who did what.
	carol.must(t, "delete", map[string]any{"channel": grp, "offset": spam})
	_, e = phone.call(t, "delete", map[string]any{"channel": grp, "offset": off})
	wantCode(t, "member deleting another's message", e, 103)
	entries := carol.must(t, "group.audit", map[string]any{"channel": grp})["entries"].([]any)
	var actions []string
	for _, x := range entries {
		actions = append(actions, x.(map[string]any)["action"].(string))
	}
	if len(actions) < 3 || actions[0] != "delete_message" || actions[1] != "ban" {
		t.Fatalf("audit: %v", actions)
	}
	_, e = desktop.call(t, "group.audit", map[string]any{"channel": grp})
	wantCode(t, "member reading the audit log", e, 103)

	// bob finds the message by search, with its position; mallory finds nothing.
	hits := desktop.must(t, "search", map[string]any{"query": "quarterly report"})["hits"].([]any)
	if len(hits) != 1 || hits[0].(map[string]any)["offset"] != off || hits[0].(map[string]any)["channel"] != grp {
		t.Fatalf("bob's hits: %v", hits)
	}
	if hits := mallory[0].must(t, "search", map[string]any{"query": "report"})["hits"].([]any); len(hits) != 0 {
		t.Fatalf("mallory's hits: %v", hits)
	}
	if hits := desktop.must(t, "search", map[string]any{"query": "buy"})["hits"].([]any); len(hits) != 0 {
		t.Fatalf("a deleted message is found: %v", hits)
	}

	// A DM appears in both inboxes once a message exists; profiles show names.
	dm := "dm:#alice,bob"
	servertest.Subscribe(t, alice.Client, dm, centrifuge.SubscriptionConfig{})
	alice.must(t, "publish", map[string]any{"channel": dm, "data": map[string]string{"text": "psst"}})
	phone.waitInbox(t, "message", dm)
	inbox = phone.must(t, "inbox", map[string]any{})["conversations"].([]any)
	if len(inbox) != 2 || inbox[0].(map[string]any)["channel"] != dm || inbox[0].(map[string]any)["unread"] != 1.0 ||
		inbox[0].(map[string]any)["title"] != "Alice A." {
		t.Fatalf("bob's inbox with a DM (titled with alice's profile name): %v", inbox)
	}
	ps := phone.must(t, "profiles", map[string]any{"users": []string{"alice", "nobody"}})["profiles"].([]any)
	if len(ps) != 1 || ps[0].(map[string]any)["name"] != "Alice A." {
		t.Fatalf("profiles: %v", ps)
	}
	members := phone.must(t, "group.members", map[string]any{"channel": grp})["members"].([]any)
	if len(members) != 3 || members[0].(map[string]any)["name"] != "Alice A." || members[1].(map[string]any)["role"] != "admin" {
		t.Fatalf("members: %v", members)
	}

	// The owner deletes the group: everyone subscribed is told so.
	bobSub := servertest.Subscribe(t, desktop.Client, grp, centrifuge.SubscriptionConfig{})
	alice.must(t, "group.delete", map[string]any{"channel": grp})
	if ev := servertest.Recv(t, bobSub.Unsubscribed, "bob's unsubscribe"); ev.Code != 2103 {
		t.Fatalf("deleted group: %+v", ev)
	}
	_, e = desktop.call(t, "group.get", map[string]any{"channel": grp})
	wantCode(t, "a deleted group", e, 102)
}

// Limits are config: a full group and too many invites get 106.
func TestGroupLimits(t *testing.T) {
	cfg := servertest.Config()
	cfg.Groups = config.Groups{MembersPerGroup: 2, InvitesPerHour: 2}
	srv := servertest.Start(t, cfg, nil, nil)
	alice := dial(t, srv, "alice")
	grp := alice.must("group.create", map[string]any{"title": "small"})["channel"].(string)
	alice.must("group.add", map[string]any{"channel": grp, "user": "bob"})
	if _, e := alice.call("group.add", map[string]any{"channel": grp, "user": "carol"}); errCode(e) != 106 {
		t.Fatalf("third member: %v", e)
	}
	alice.must("group.invite", map[string]any{"channel": grp})
	if _, e := alice.call("group.invite", map[string]any{"channel": grp}); errCode(e) != 106 {
		t.Fatalf("invite over the hourly limit: %v", e)
	}
	for _, bad := range []struct {
		method string
		params any
	}{
		{"group.create", map[string]any{"who_posts": "everyone"}},
		{"group.create", map[string]any{"id": "no spaces"}},
		{"group.create", map[string]any{"unknown": 1}},
		{"group.get", map[string]any{"channel": "room:1"}},
		{"group.mute", map[string]any{"channel": grp, "user": "bob", "duration": -1}},
		{"search", map[string]any{"query": ""}},
		{"inbox", map[string]any{"limit": 100000}},
		{"profiles", map[string]any{"users": []string{}}},
	} {
		if _, e := alice.call(bad.method, bad.params); errCode(e) != 107 {
			t.Errorf("%s %v: %v, want 107", bad.method, bad.params, e)
		}
	}
	if _, e := alice.call("group.get", map[string]any{"channel": "grp:nope"}); errCode(e) != 102 {
		t.Fatalf("unknown group: %v", e)
	}
}
