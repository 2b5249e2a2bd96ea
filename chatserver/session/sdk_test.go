package session_test

import (
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// The SDKs send an empty epoch when the app built the position itself
// (getState) and for since {offset, epoch: ""}: as in Centrifugo, the epoch
// check is skipped and what follows the offset comes back.
func TestRecoveryWithEmptyEpoch(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const ch = "room:empty-epoch"
	for range 3 {
		if _, err := srv.Node.Publish(ctx(t), ch, []byte(`{}`), nil, nodePublishOptions()); err != nil {
			t.Fatal(err)
		}
	}
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			raw := servertest.DialRaw(t, srv.WS, proto)
			raw.Connect(t, servertest.Token(t, "alice"))
			id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch, Recover: true, Offset: 1, Flag: 2}})
			rep := raw.Reply(t, id)
			if rep.Error != nil || rep.Subscribe == nil {
				t.Fatalf("subscribe: %+v", rep.Error)
			}
			res := rep.Subscribe
			if !res.Recovered || !res.WasRecovering || len(res.Publications) != 2 || res.Publications[0].Offset != 2 || res.Epoch == "" {
				t.Fatalf("recovered=%v publications=%d epoch=%q", res.Recovered, len(res.Publications), res.Epoch)
			}
			id = raw.Command(t, &protocol.Command{History: &protocol.HistoryRequest{Channel: ch, Limit: 10, Since: &protocol.StreamPosition{Offset: 2}}})
			rep = raw.Reply(t, id)
			if rep.Error != nil || len(rep.History.Publications) != 1 || rep.History.Publications[0].Offset != 3 {
				t.Fatalf("history since {2, \"\"}: %+v", rep)
			}
		})
	}
}

// An rpc method without a handler answers 108 "not available", as
// Centrifugo does (the SDKs' test suites expect it).
func TestUnknownRPCMethodIsNotAvailable(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	c := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	if _, err := c.RPC(ctx(t), "nope", []byte(`{}`)); serverErr(t, err).Code != 108 {
		t.Fatalf("unknown rpc: %v, want 108", err)
	}
}

// Anonymous publishing and presence are off unless a namespace turns them
// on (a public demo room).
func TestAnonymousPublishAndPresencePerNamespace(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.AllowAnonymous = true
	hist := config.History{Size: 10, TTL: config.Duration(time.Hour)}
	cfg.Namespaces = append(cfg.Namespaces,
		config.Namespace{Name: "demo", History: hist, Presence: true, AllowAnonymous: true, AllowAnonymousPublish: true, AllowAnonymousPresence: true},
		config.Namespace{Name: "lobby", History: hist, Presence: true, AllowAnonymous: true},
	)
	srv := servertest.Start(t, cfg, nil, nil)
	anon := servertest.Connect(t, srv.WS, "json", "")
	other := servertest.Connect(t, srv.WS, "protobuf", "")

	demo := servertest.Subscribe(t, anon, "demo:1", centrifuge.SubscriptionConfig{})
	servertest.Subscribe(t, other, "demo:1", centrifuge.SubscriptionConfig{})
	if _, err := other.Publish(ctx(t), "demo:1", []byte(`{"text":"hi"}`)); err != nil {
		t.Fatalf("anonymous publish in demo: %v", err)
	}
	if p := servertest.Recv(t, demo.Pubs, "anonymous publication"); string(p.Data) != `{"text":"hi"}` {
		t.Fatalf("got %s", p.Data)
	}
	if _, err := rpc(t, other, "publish", map[string]any{"channel": "demo:1", "data": map[string]string{"text": "rpc"}}); err != nil {
		t.Fatalf("anonymous publish rpc in demo: %v", err)
	}
	p, err := anon.Presence(ctx(t), "demo:1")
	if err != nil || len(p.Clients) != 2 {
		t.Fatalf("anonymous presence in demo: %+v %v", p, err)
	}
	if s, err := anon.PresenceStats(ctx(t), "demo:1"); err != nil || s.NumClients != 2 {
		t.Fatalf("anonymous presence_stats in demo: %+v %v", s, err)
	}

	servertest.Subscribe(t, anon, "lobby:1", centrifuge.SubscriptionConfig{})
	if _, err := anon.Publish(ctx(t), "lobby:1", []byte(`{}`)); serverErr(t, err).Code != 103 {
		t.Fatalf("anonymous publish in lobby: %v, want 103", err)
	}
	if _, err := anon.Presence(ctx(t), "lobby:1"); serverErr(t, err).Code != 103 {
		t.Fatalf("anonymous presence in lobby: %v, want 103", err)
	}
	if _, err := anon.PresenceStats(ctx(t), "lobby:1"); serverErr(t, err).Code != 103 {
		t.Fatalf("anonymous presence_stats in lobby: %v, want 103", err)
	}
}
