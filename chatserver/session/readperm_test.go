package session_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// readOutcome runs one read command and says how it was answered: "ok",
// or the error code ("103", "108"). For unread a channel left out of the
// states counts as "103": the caller learns nothing about it.
func readOutcome(t *testing.T, c *centrifuge.Client, command, channel string) string {
	t.Helper()
	var err error
	switch command {
	case "history":
		_, err = c.History(ctx(t), channel, centrifuge.WithHistoryLimit(10))
	case "presence":
		_, err = c.Presence(ctx(t), channel)
	case "presence_stats":
		_, err = c.PresenceStats(ctx(t), channel)
	case "unread":
		var res map[string]any
		res, err = rpc(t, c, "unread", map[string]any{"channels": []string{channel}})
		if err == nil {
			states, _ := res["states"].([]any)
			if len(states) == 0 {
				return "103"
			}
			if st := states[0].(map[string]any); st["channel"] != channel {
				t.Fatalf("unread answered for %v", st)
			}
		}
	case "receipts":
		_, err = rpc(t, c, "receipts", map[string]any{"channel": channel})
	case "read":
		_, err = rpc(t, c, "read", map[string]any{"channel": channel, "offset": 1})
	default:
		t.Fatalf("unknown command %s", command)
	}
	if err == nil {
		return "ok"
	}
	var e *centrifuge.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s %s: %v", command, channel, err)
	}
	return fmt.Sprint(e.Code)
}

// Every read path (history, presence, presence_stats, unread, receipts and
// read receipts) checks the subscribe permission first, then the namespace's
// allowHistory/allowPresence rule: a DM between two others, someone else's
// personal channel or a token-only channel reveals nothing, not even that it
// exists or how many messages it holds.
func TestReadPathsCheckSubscribePermission(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.AllowAnonymous = true
	hist := config.History{Size: 100, TTL: config.Duration(time.Hour)}
	// vault: token-only subscribe, but history and presence readable by "authenticated".
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: "vault", History: hist, Presence: true,
		AllowSubscribe: "token", AllowHistory: config.PublishAuthenticated, AllowPresence: config.PublishAuthenticated})
	srv := servertest.Start(t, cfg, nil, nil)

	claims := servertest.TokenClaims("alice", time.Hour)
	claims.Channels = []string{"secret:*", "vault:*"}
	member := servertest.Connect(t, srv.WS, "json", servertest.Sign(t, claims, servertest.Secret))
	other := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))
	anon := servertest.Connect(t, srv.WS, "json", "")

	channels := map[string]string{
		"room": "room:t", "open": "open:t", "news": "news:t", "secret": "secret:t", "vault": "vault:t",
		"dm": "dm:#alice,carol", "personal": "personal:#alice", "plain": "plain:t",
	}
	for kind, ch := range channels {
		if kind != "personal" { // the server subscribed alice to it at connect
			servertest.Subscribe(t, member, ch, centrifuge.SubscriptionConfig{})
		}
		if _, err := srv.Node.Publish(ctx(t), ch, []byte(`{"n":1}`), nil, nodePublishOptions()); err != nil {
			t.Fatal(err)
		}
	}

	// want[command][kind] = outcome for member, other (authenticated, not
	// subscribed, no grant, not one of the channel's users), anonymous.
	type want [3]string
	all := func(s string) want { return want{s, s, s} }
	tests := map[string]map[string]want{
		"history": {
			"room": {"ok", "103", "103"}, "open": {"ok", "ok", "103"}, "news": {"ok", "103", "103"},
			"secret": {"ok", "103", "103"}, "vault": {"ok", "103", "103"}, "dm": {"ok", "103", "103"},
			"personal": {"ok", "103", "103"}, "plain": all("108"),
		},
		"presence": {
			"room": {"ok", "103", "103"}, "open": {"ok", "ok", "103"}, "news": all("108"),
			"secret": all("108"), "vault": {"ok", "103", "103"}, "dm": {"ok", "103", "103"},
			"personal": all("108"), "plain": all("108"),
		},
		"unread": {
			"room": {"ok", "ok", "103"}, "open": {"ok", "ok", "103"}, "news": {"ok", "ok", "103"},
			"secret": {"ok", "103", "103"}, "vault": {"ok", "103", "103"}, "dm": {"ok", "103", "103"},
			"personal": {"ok", "103", "103"}, "plain": {"ok", "ok", "103"},
		},
		"receipts": {
			"room": {"ok", "103", "103"}, "open": {"ok", "ok", "103"}, "news": {"ok", "103", "103"},
			"secret": {"ok", "103", "103"}, "vault": {"ok", "103", "103"}, "dm": {"ok", "103", "103"},
			"personal": {"ok", "103", "103"}, "plain": {"ok", "103", "103"},
		},
	}
	tests["presence_stats"] = tests["presence"]
	tests["read"] = tests["receipts"]
	callers := []struct {
		name string
		c    *centrifuge.Client
	}{{"member", member}, {"other", other}, {"anonymous", anon}}
	for command, kinds := range tests {
		for kind, w := range kinds {
			for i, caller := range callers {
				t.Run(command+"/"+kind+"/"+caller.name, func(t *testing.T) {
					if got := readOutcome(t, caller.c, command, channels[kind]); got != w[i] {
						t.Fatalf("%s on %s by %s: %s, want %s", command, channels[kind], caller.name, got, w[i])
					}
				})
			}
		}
	}
	// The answers above never cost the member its connection.
	if member.State() != centrifuge.StateConnected {
		t.Fatal("member disconnected")
	}
}
